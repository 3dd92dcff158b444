package admin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// cmdQuerier is what a command's exec uses of its transaction.
type cmdQuerier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// cmdTx is a command's transaction on one connection, sent in as few round
// trips as the command allows. Every round trip costs both processes a
// write, a read and a wake-up, and on a loaded machine each wake-up waits
// for a core: evict-bench measured the round trips, not the statements, as
// what bounded the command rate. So BEGIN and the tenant lock wait in
// pending and go with the command's first statement, and the statements
// whose results the command does not need go with COMMIT. A command that
// logs out one user makes one round trip where pgx.BeginFunc made six.
type cmdTx struct {
	pool    *pgxpool.Pool
	pc      *pgxpool.Conn // acquired for the first round trip
	pending []pendingStmt
	// combine, when set, may commit the transaction with others' (see
	// combiner); key orders its row locks among theirs, and only a
	// transaction with a key is combined.
	combine *combiner
	key     string
}

// pendingStmt is a statement that waits for the next round trip; result
// reads its result from the batch.
type pendingStmt struct {
	sql    string
	args   []any
	result func(pgx.BatchResults) error
}

var _ cmdQuerier = (*cmdTx)(nil)

// inCmdTx runs fn in a cmdTx, and again, from the start, when PostgreSQL
// aborts it for a deadlock, a serialization failure or a unique violation
// that a concurrent retry of the same Idempotency-Key caused. fn ends the
// transaction with commit; a transaction fn leaves open is rolled back.
//
// A transaction that a combined commit failed is run again alone.
func (s *Server) inCmdTx(ctx context.Context, fn func(context.Context, *cmdTx) error) error {
	alone := false
	return retryTx(func() error {
		t := &cmdTx{pool: s.pool}
		if !alone {
			t.combine = s.combine
		}
		defer func() {
			if t.pc != nil {
				// pgxpool closes a connection released inside a
				// transaction, so a failed rollback cannot leak one.
				t.pc.Release()
			}
		}()
		t.defer_("begin", nil, execResult)
		err := fn(ctx, t)
		if t.pc != nil && t.pc.Conn().PgConn().TxStatus() != 'I' {
			if _, rerr := t.pc.Exec(context.WithoutCancel(ctx), "rollback"); rerr != nil && err == nil {
				err = fmt.Errorf("admin: rollback: %w", rerr)
			}
		}
		alone = alone || errors.Is(err, errAlone)
		return err
	})
}

// acquire returns the transaction's connection, acquired from the pool
// the first time.
func (t *cmdTx) acquire(ctx context.Context) (*pgx.Conn, error) {
	if t.pc == nil {
		pc, err := t.pool.Acquire(ctx)
		if err != nil {
			return nil, err
		}
		t.pc = pc
	}
	return t.pc.Conn(), nil
}

// defer_ queues a statement for the next round trip.
func (t *cmdTx) defer_(sql string, args []any, result func(pgx.BatchResults) error) {
	t.pending = append(t.pending, pendingStmt{sql: sql, args: args, result: result})
}

func execResult(br pgx.BatchResults) error {
	_, err := br.Exec()
	return err
}

// send sends the pending statements, then b's, in one round trip and reads
// the pending statements' results. The caller reads b's and closes the
// results.
func (t *cmdTx) send(ctx context.Context, b *pgx.Batch) (pgx.BatchResults, error) {
	full := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, len(t.pending)+b.Len())}
	for _, p := range t.pending {
		full.Queue(p.sql, p.args...)
	}
	full.QueuedQueries = append(full.QueuedQueries, b.QueuedQueries...)
	conn, err := t.acquire(ctx)
	if err != nil {
		return nil, err
	}
	pending := t.pending
	t.pending = nil
	br := conn.SendBatch(ctx, full)
	for _, p := range pending {
		if err := p.result(br); err != nil {
			// What follows failed or ran for nothing: the caller rolls
			// back. Close reads it all, so the connection stays usable.
			_ = br.Close()
			return nil, err
		}
	}
	return br, nil
}

// Exec runs sql in the transaction.
func (t *cmdTx) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if len(t.pending) == 0 {
		conn, err := t.acquire(ctx)
		if err != nil {
			return pgconn.CommandTag{}, err
		}
		return conn.Exec(ctx, sql, args...)
	}
	var b pgx.Batch
	b.Queue(sql, args...)
	br, err := t.send(ctx, &b)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := br.Exec()
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return tag, err
}

// Query runs sql in the transaction.
func (t *cmdTx) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if len(t.pending) == 0 {
		conn, err := t.acquire(ctx)
		if err != nil {
			return nil, err
		}
		return conn.Query(ctx, sql, args...)
	}
	var b pgx.Batch
	b.Queue(sql, args...)
	br, err := t.send(ctx, &b)
	if err != nil {
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &batchRows{Rows: rows, br: br}, nil
}

// QueryRow runs sql in the transaction; Scan reports pgx.ErrNoRows when
// it returned no row.
func (t *cmdTx) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	rows, err := t.Query(ctx, sql, args...)
	return firstRow{rows: rows, err: err}
}

// commit sends the pending statements, b's and COMMIT in one round trip,
// with other transactions' when it may be combined (see combiner).
func (t *cmdTx) commit(ctx context.Context, b *pgx.Batch) error {
	if t.combine != nil && t.key != "" && t.pc == nil {
		return t.combine.commit(ctx, t, b)
	}
	return t.commitAlone(ctx, b)
}

// commitAlone sends the pending statements, b's and COMMIT in one round
// trip.
func (t *cmdTx) commitAlone(ctx context.Context, b *pgx.Batch) error {
	all := &pgx.Batch{QueuedQueries: make([]*pgx.QueuedQuery, 0, b.Len()+1)}
	all.QueuedQueries = append(all.QueuedQueries, b.QueuedQueries...)
	all.Queue("commit")
	br, err := t.send(ctx, all)
	if err != nil {
		return err
	}
	err = readQueued(br, b)
	if err == nil {
		err = commitResult(br)
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// readQueued reads the results of b's statements from br.
func readQueued(br pgx.BatchResults, b *pgx.Batch) error {
	for _, q := range b.QueuedQueries {
		if err := resultOf(q)(br); err != nil {
			return err
		}
	}
	return nil
}

// resultOf is what reads q's result from its batch's results.
func resultOf(q *pgx.QueuedQuery) func(pgx.BatchResults) error {
	if q.Fn != nil {
		return q.Fn
	}
	return execResult
}

// commitResult reads the result of a COMMIT from br.
func commitResult(br pgx.BatchResults) error {
	tag, err := br.Exec()
	if err != nil {
		return err
	}
	// A COMMIT of a transaction that had failed answers ROLLBACK.
	if tag.String() != "COMMIT" {
		return pgx.ErrTxCommitRollback
	}
	return nil
}

// batchRows are the rows of a batch's last statement; closing them closes
// the batch.
type batchRows struct {
	pgx.Rows
	br     pgx.BatchResults
	closed bool
	err    error
}

func (r *batchRows) Close() {
	r.Rows.Close()
	if !r.closed {
		r.closed = true
		r.err = r.br.Close()
	}
}

func (r *batchRows) Err() error {
	if err := r.Rows.Err(); err != nil {
		return err
	}
	return r.err
}

// firstRow is pgx.Row over the first row of rows.
type firstRow struct {
	rows pgx.Rows
	err  error
}

func (r firstRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}

// retryTx runs attempt up to five times while PostgreSQL aborts it for a
// deadlock (40P01), a serialization failure (40001) or a unique violation
// (23505) that a concurrent retry of the same Idempotency-Key caused.
func retryTx(attempt func() error) error {
	var err error
	for i := 0; i < 5; i++ {
		err = attempt()
		if errors.Is(err, errAlone) {
			continue
		}
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			return err
		}
		switch pgErr.Code {
		case "40001", "40P01", "23505":
			time.Sleep(time.Duration(i+1) * 5 * time.Millisecond)
			continue
		}
		return err
	}
	return err
}
