// Package revset is the guard's revocation table: the in-memory map that the
// session guard consults on every HTTP request to learn whether a tenant, a
// user or a session has been revoked, and since when.
//
// One goroutine feeds it, applying the messages of the EVICT_STATE JetStream
// stream (see package events) as they arrive, and prunes it from time to time;
// every request handler reads it. The table is built for that shape: one
// writer, many readers, and reads that take no lock and allocate nothing, so a
// revocation check costs two string hashes and, most of the time, one memory
// access, and never waits for the writer.
//
// A key is a kind byte (tenant, user or session watermark), a tenant and an
// id; a value is a unix time in nanoseconds. Keys are stored as two 64-bit
// hashes with random per-process seeds, not as strings: a false match needs
// both to collide, and nobody outside the process can choose keys that do.
package revset
