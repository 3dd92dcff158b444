package db

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Settings returns the server's current value of each setting named, as
// SHOW prints it.
func Settings(ctx context.Context, pool *pgxpool.Pool, names ...string) (map[string]string, error) {
	settings := map[string]string{}
	rows, err := pool.Query(ctx, `SELECT name, current_setting(name) FROM unnest($1::text[]) AS name`, names)
	if err != nil {
		return nil, fmt.Errorf("db: read settings: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, value string
		if err := rows.Scan(&name, &value); err != nil {
			return nil, fmt.Errorf("db: read settings: %w", err)
		}
		settings[name] = value
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("db: read settings: %w", err)
	}
	return settings, nil
}

// Warnings reads the server settings evict depends on and says, one
// sentence each, which are set against it.
func Warnings(ctx context.Context, pool *pgxpool.Pool) ([]string, error) {
	settings, err := Settings(ctx, pool, "autovacuum", "fsync", "synchronous_commit")
	if err != nil {
		return nil, err
	}
	return warnings(settings), nil
}

// warnings judges the settings Warnings read.
func warnings(settings map[string]string) []string {
	var w []string
	if settings["autovacuum"] == "off" {
		// Every command inserts into the outbox, which the relay empties,
		// and updates operations and sessions: without vacuum their dead
		// rows pile up and every scan of them slows down.
		w = append(w, "autovacuum is off: the outbox, operations and sessions tables churn on every command and slow down unless they are vacuumed and analyzed; turn autovacuum on, or VACUUM ANALYZE them on a schedule")
	}
	if settings["fsync"] == "off" {
		w = append(w, "fsync is off: a logout evict accepted can be lost when the database server crashes")
	}
	if settings["synchronous_commit"] == "off" {
		w = append(w, "synchronous_commit is off for the database: a logout evict accepted can be lost when the database server crashes")
	}
	return w
}
