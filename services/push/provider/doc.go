// Package provider defines how the push notifier hands one logout
// notification to one device, and the errors it branches on.
//
// The notifier consumes logout events from JetStream, resolves the affected
// devices and calls a Sender once per device. The subpackages speak the real
// protocols: apns (Apple's HTTP/2 provider API with token authentication),
// fcm (Firebase Cloud Messaging HTTP v1 with a service account) and webhook
// (a signed JSON POST to an in-house gateway). A Sender does not retry: it
// classifies each failure so that the notifier, which owns the work item, can
// remove a dead token (ErrTokenInvalid), retry later (ErrRetryable, with the
// provider's Retry-After) or dead-letter the push (anything else).
package provider
