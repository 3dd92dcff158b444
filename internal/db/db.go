// Package db opens evict's PostgreSQL database, creating it when it is
// missing, and applies the embedded migrations. Several evictd replicas may
// start at once: migrations run under an advisory lock.
package db

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// DefaultURL is the database evictd uses when DATABASE_URL is not set.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/evict?sslmode=disable"

// migrationLock is the advisory lock key that serializes migrations between
// replicas ("evictmig" in ASCII).
const migrationLock = 0x657669637466d67

// Migrations holds the schema migrations, applied in file name order.
//
//go:embed migrations/*.sql
var Migrations embed.FS

// Open connects to url, creates its database if it does not exist, applies
// pending migrations and returns a pool.
func Open(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("db: parse DATABASE_URL: %w", err)
	}
	if err := ensureDatabase(ctx, cfg.ConnConfig); err != nil {
		return nil, err
	}
	pool, err := NewPool(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := Migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// NewPool opens a pool with cfg whose connections encode evict's types
// (RegisterTypes). It neither creates nor migrates the database.
func NewPool(ctx context.Context, cfg *pgxpool.Config) (*pgxpool.Pool, error) {
	cfg.AfterConnect = func(_ context.Context, c *pgx.Conn) error {
		RegisterTypes(c.TypeMap())
		return nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("db: connect: %w", err)
	}
	return pool, nil
}

// ensureDatabase creates the target database through the maintenance
// database "postgres" when connecting to it fails because it does not exist.
func ensureDatabase(ctx context.Context, cc *pgx.ConnConfig) error {
	conn, err := pgx.ConnectConfig(ctx, cc)
	if err == nil {
		return conn.Close(ctx)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "3D000" { // invalid_catalog_name
		return fmt.Errorf("db: connect to %s: %w", cc.Database, err)
	}
	admin := cc.Copy()
	admin.Database = "postgres"
	aconn, err := pgx.ConnectConfig(ctx, admin)
	if err != nil {
		return fmt.Errorf("db: connect to maintenance database: %w", err)
	}
	defer aconn.Close(ctx)
	_, err = aconn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{cc.Database}.Sanitize())
	if errors.As(err, &pgErr) && pgErr.Code == "42P04" { // duplicate_database: another replica won
		err = nil
	}
	if err != nil {
		return fmt.Errorf("db: create database %s: %w", cc.Database, err)
	}
	return nil
}

// Migrate applies every embedded migration not yet recorded in
// schema_migrations, each in its own transaction, holding an advisory lock so
// that replicas starting together apply each migration once.
func Migrate(ctx context.Context, pool *pgxpool.Pool) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("db: migrate: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("db: migrate: lock: %w", err)
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLock) //nolint:errcheck // the lock dies with the session anyway

	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		return fmt.Errorf("db: migrate: %w", err)
	}
	var current int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&current); err != nil {
		return fmt.Errorf("db: migrate: %w", err)
	}
	files, err := fs.Glob(Migrations, "migrations/*.sql")
	if err != nil {
		return fmt.Errorf("db: migrate: %w", err)
	}
	sort.Strings(files)
	for _, f := range files {
		base := strings.TrimPrefix(f, "migrations/")
		version, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("db: migration %s: name must start with a number: %w", base, err)
		}
		if version <= current {
			continue
		}
		sql, err := Migrations.ReadFile(f)
		if err != nil {
			return fmt.Errorf("db: migrate: %w", err)
		}
		err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, string(sql)); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO schema_migrations (version) VALUES ($1)", version)
			return err
		})
		if err != nil {
			return fmt.Errorf("db: migration %s: %w", base, err)
		}
	}
	return nil
}
