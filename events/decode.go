package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Keys of the fields the state event types have. Each type's data struct
// uses a subset (dataFields).
const (
	fTenant = iota
	fUser
	fSession
	fDevice
	fNotBefore
	fRevokedAt
	fOperationID
	fCause
	fGroup
	fReason
	nFields
)

var fieldNames = [nFields]string{"tenant", "user", "session", "device", "not_before", "revoked_at", "operation_id", "cause", "group", "reason"}

// dataFields are the fields of each state type's data struct, as in
// TenantRevoked, UserRevoked, SessionRevoked, DeviceRevoked, TrustRevoked.
var dataFields = map[string][]int{
	TypeTenantRevoked:  {fTenant, fNotBefore, fOperationID, fCause, fReason},
	TypeUserRevoked:    {fTenant, fUser, fNotBefore, fOperationID, fCause, fGroup, fReason},
	TypeSessionRevoked: {fTenant, fSession, fUser, fRevokedAt, fOperationID, fCause, fReason},
	TypeDeviceRevoked:  {fTenant, fUser, fDevice, fRevokedAt, fOperationID, fReason},
	TypeTrustRevoked:   {fTenant, fUser, fNotBefore, fOperationID, fReason},
}

// span is a JSON value's position in the input; a zero span is absent.
type span struct{ start, end int }

// DecodeRevocation decodes a state event. It returns ErrUnknownType (wrapped)
// for the heartbeat and for types it does not know. The data is checked
// against the type's own fields, so a field added to one type cannot break
// another.
//
// Every guard decodes every state event, a million of them at a cold
// start, so this reads the JSON in one pass without reflection: about ten
// times faster than encoding/json, which spent 90 % of a guard's load time.
// It accepts and refuses exactly what json.Unmarshal into the event types
// would (keys matched case-insensitively, the last of duplicate keys
// winning, strings with escapes or non-ASCII bytes decoded by
// encoding/json itself); TestDecodeRevocationMatchesEncodingJSON and the
// fuzz target compare the two.
func DecodeRevocation(b []byte) (Revocation, error) {
	var id, typ, at, data span
	// encoding/json decodes every occurrence of a repeated key, so an
	// earlier one that does not decode fails the event even though the
	// last one is kept; dupErr is the first such failure.
	var dupErr error
	top, err := scanObject(b, 0, func(key []byte, v span) {
		switch {
		case keyIs(key, "id"):
			if id != (span{}) && dupErr == nil {
				dupErr = checkString(b, id)
			}
			id = v
		case keyIs(key, "type"):
			if typ != (span{}) && dupErr == nil {
				dupErr = checkString(b, typ)
			}
			typ = v
		case keyIs(key, "time"):
			if at != (span{}) && dupErr == nil {
				dupErr = checkTime(b, at)
			}
			at = v
		case keyIs(key, "data"):
			data = v
		}
	})
	if err != nil {
		return Revocation{}, fmt.Errorf("events: decode state event: %w", err)
	}
	var r Revocation
	var typeName string
	if top {
		var err1, err2 error
		r.EventID, err1 = decodeString(b, id)
		typeName, err2 = decodeType(b, typ)
		if err := firstErr(dupErr, err1, err2, decodeTime(b, at, &r.EventTime)); err != nil {
			return Revocation{}, fmt.Errorf("events: decode state event: %w", err)
		}
	}
	fields, ok := dataFields[typeName]
	if !ok {
		return Revocation{}, fmt.Errorf("%w: %q", ErrUnknownType, typeName)
	}
	var vals [nFields]span
	if data != (span{}) {
		if _, err := scanObject(b[:data.end], data.start, func(key []byte, v span) {
			if f, ok := exactField(key); ok {
				if vals[f] != (span{}) && dupErr == nil && slices.Contains(fields, f) {
					dupErr = checkField(b, f, vals[f])
				}
				vals[f] = v // fields holds f or vals[f] is never read
				return
			}
			for _, f := range fields {
				if keyIs(key, fieldNames[f]) {
					if vals[f] != (span{}) && dupErr == nil {
						dupErr = checkField(b, f, vals[f])
					}
					vals[f] = v
				}
			}
		}); err != nil {
			return Revocation{}, fmt.Errorf("events: decode %s data: %w", typeName, err)
		}
		if dupErr != nil {
			return Revocation{}, fmt.Errorf("events: decode %s data: %w", typeName, dupErr)
		}
	}
	var str [nFields]string
	var tm [nFields]time.Time
	for _, f := range fields {
		switch f {
		case fNotBefore, fRevokedAt:
			err = decodeTime(b, vals[f], &tm[f])
		case fCause, fGroup, fReason:
			// Not part of a Revocation: checked, not kept.
			err = checkString(b, vals[f])
		default:
			str[f], err = decodeString(b, vals[f])
		}
		if err != nil {
			return Revocation{}, fmt.Errorf("events: decode %s data: %w", typeName, err)
		}
	}
	r.Tenant, r.OperationID = str[fTenant], str[fOperationID]
	switch typeName {
	case TypeTenantRevoked:
		r.Kind, r.At = KindTenant, tm[fNotBefore]
	case TypeUserRevoked:
		r.Kind, r.ID, r.At = KindUser, str[fUser], tm[fNotBefore]
	case TypeSessionRevoked:
		r.Kind, r.ID, r.At = KindSession, str[fSession], tm[fRevokedAt]
	case TypeDeviceRevoked:
		r.Kind, r.ID, r.At = KindDevice, str[fDevice], tm[fRevokedAt]
	case TypeTrustRevoked:
		r.Kind, r.ID, r.At = KindTrust, str[fUser], tm[fNotBefore]
	}
	if err := CheckID("tenant", r.Tenant); err != nil {
		return Revocation{}, fmt.Errorf("events: %s: %w", typeName, err)
	}
	if r.Kind != KindTenant {
		if err := CheckID(r.Kind, r.ID); err != nil {
			return Revocation{}, fmt.Errorf("events: %s: %w", typeName, err)
		}
	}
	if r.At.IsZero() {
		return Revocation{}, fmt.Errorf("events: %s: missing timestamp", typeName)
	}
	return r, nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// exactField is the field a key names exactly, as evict writes them: the
// common case, a switch on the key and no folding.
func exactField(key []byte) (int, bool) {
	switch string(key) {
	case "tenant":
		return fTenant, true
	case "user":
		return fUser, true
	case "session":
		return fSession, true
	case "device":
		return fDevice, true
	case "not_before":
		return fNotBefore, true
	case "revoked_at":
		return fRevokedAt, true
	case "operation_id":
		return fOperationID, true
	case "cause":
		return fCause, true
	case "group":
		return fGroup, true
	case "reason":
		return fReason, true
	}
	return 0, false
}

// keyIs matches a key as encoding/json matches a field name: exactly, or
// else case-insensitively.
func keyIs(key []byte, name string) bool {
	if string(key) == name {
		return true
	}
	for _, c := range key {
		if c >= 0x80 { // may fold to ASCII (the Kelvin sign to k)
			return strings.EqualFold(string(key), name)
		}
	}
	if len(key) != len(name) {
		return false
	}
	for i, c := range key {
		if c|0x20 != name[i]|0x20 || c|0x20 < 'a' || c|0x20 > 'z' {
			if c != name[i] {
				return false
			}
		}
	}
	return true
}

// decodeString decodes a string or null value (null gives ""). A string
// that is plain ASCII without escapes is taken as is; anything else goes to
// encoding/json, whose rules for escapes and invalid UTF-8 are then
// followed exactly.
func decodeString(b []byte, v span) (string, error) {
	raw, plain, err := stringValue(b, v)
	if err != nil || raw == nil {
		return "", err
	}
	if plain {
		return string(raw[1 : len(raw)-1]), nil
	}
	var out string
	err = json.Unmarshal(raw, &out)
	return out, err
}

// checkString reports what decodeString would, without keeping the string.
func checkString(b []byte, v span) error {
	raw, plain, err := stringValue(b, v)
	if err != nil || raw == nil || plain {
		return err
	}
	var out string
	return json.Unmarshal(raw, &out)
}

// decodeType is decodeString for the type, without a copy when it names a
// known type, as it does every time but in tests.
func decodeType(b []byte, v span) (string, error) {
	if raw, plain, err := stringValue(b, v); err == nil && plain {
		if t, ok := typeNames[string(raw[1:len(raw)-1])]; ok {
			return t, nil
		}
	}
	return decodeString(b, v)
}

// typeNames holds the state event types, to be looked up without a copy.
var typeNames = func() map[string]string {
	m := make(map[string]string, len(dataFields))
	for t := range dataFields {
		m[t] = t
	}
	return m
}()

// stringValue returns the raw JSON of a string value (nil for null or
// absent) and whether it is plain ASCII without escapes.
func stringValue(b []byte, v span) (raw []byte, plain bool, err error) {
	if v == (span{}) {
		return nil, false, nil
	}
	raw = b[v.start:v.end]
	switch raw[0] {
	case 'n':
		return nil, false, nil
	case '"':
	default:
		return nil, false, fmt.Errorf("cannot decode %.20s into a string", raw)
	}
	for _, c := range raw[1 : len(raw)-1] {
		if c == '\\' || c >= 0x80 {
			return raw, false, nil
		}
	}
	return raw, true, nil
}

// checkTime reports what decodeTime would, without keeping the time.
func checkTime(b []byte, v span) error {
	var t time.Time
	return decodeTime(b, v, &t)
}

// checkField reports whether the value of data field f decodes.
func checkField(b []byte, f int, v span) error {
	if f == fNotBefore || f == fRevokedAt {
		return checkTime(b, v)
	}
	return checkString(b, v)
}

// decodeTime decodes a value as json.Unmarshal into a time.Time does.
func decodeTime(b []byte, v span, out *time.Time) error {
	if v == (span{}) {
		return nil
	}
	return out.UnmarshalJSON(b[v.start:v.end])
}

// maxDepth is encoding/json's nesting limit.
const maxDepth = 10000

var errSyntax = errors.New("invalid JSON")

// scanObject checks that b[from:] holds exactly one
// JSON value and nothing but white space after it. If the value is an
// object, it calls member for each key (unescaped) and value span, in
// order, and reports true; null reports false; any other value is an error
// (it cannot go into a struct).
func scanObject(b []byte, from int, member func(key []byte, v span)) (bool, error) {
	s := scanner{b: b, i: from}
	s.ws()
	isObject := s.peek() == '{'
	isNull := s.peek() == 'n'
	if err := s.value(0, member); err != nil {
		return false, err
	}
	s.ws()
	if s.i != len(s.b) {
		return false, errSyntax
	}
	switch {
	case isObject:
		return true, nil
	case isNull:
		return false, nil
	}
	return false, errors.New("cannot decode a non-object into a struct")
}

type scanner struct {
	b []byte
	i int
}

func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

func (s *scanner) ws() {
	// s.i in a local: the scanner is behind a pointer, so a loop on the
	// field would load and store it on every byte.
	i := s.i
	for i < len(s.b) && (s.b[i] == ' ' || s.b[i] == '\t' || s.b[i] == '\n' || s.b[i] == '\r') {
		i++
	}
	s.i = i
}

// value scans one value. member, when not nil, receives the members of
// this value if it is an object (not of nested ones).
func (s *scanner) value(depth int, member func(key []byte, v span)) error {
	if depth >= maxDepth {
		return errors.New("exceeded max depth")
	}
	switch c := s.peek(); {
	case c == '{':
		return s.object(depth, member)
	case c == '[':
		s.i++
		s.ws()
		if s.peek() == ']' {
			s.i++
			return nil
		}
		for {
			s.ws()
			if err := s.value(depth+1, nil); err != nil {
				return err
			}
			s.ws()
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				return nil
			default:
				return errSyntax
			}
		}
	case c == '"':
		_, err := s.str()
		return err
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return errSyntax
}

func (s *scanner) object(depth int, member func(key []byte, v span)) error {
	s.i++ // '{'
	s.ws()
	if s.peek() == '}' {
		s.i++
		return nil
	}
	for {
		s.ws()
		if s.peek() != '"' {
			return errSyntax
		}
		k, err := s.str()
		if err != nil {
			return err
		}
		s.ws()
		if s.peek() != ':' {
			return errSyntax
		}
		s.i++
		s.ws()
		start := s.i
		if err := s.value(depth+1, nil); err != nil {
			return err
		}
		if member != nil {
			key := s.b[k.start+1 : k.end-1]
			for _, c := range key {
				if c == '\\' {
					var u string
					if err := json.Unmarshal(s.b[k.start:k.end], &u); err != nil {
						return err
					}
					key = []byte(u)
					break
				}
			}
			member(key, span{start, s.i})
		}
		s.ws()
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			return nil
		default:
			return errSyntax
		}
	}
}

// plainByte marks the bytes a JSON string holds as they are: not a control
// character, a quote or a backslash.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// str scans a string and returns its span, quotes included.
func (s *scanner) str() (span, error) {
	start := s.i
	s.i++ // '"'
	for s.i < len(s.b) {
		// Most bytes are plain; skip them in a tight loop on locals.
		i, b := s.i, s.b
		for i < len(b) && plainByte[b[i]] {
			i++
		}
		s.i = i
		if s.i == len(s.b) {
			break
		}
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return span{start, s.i}, nil
		case c < 0x20:
			return span{}, errSyntax
		case c == '\\':
			s.i++
			switch s.peek() {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				s.i++
				for range 4 {
					if !isHex(s.peek()) {
						return span{}, errSyntax
					}
					s.i++
				}
			default:
				return span{}, errSyntax
			}
		default:
			s.i++
		}
	}
	return span{}, errSyntax
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func (s *scanner) literal(lit string) error {
	if !strings.HasPrefix(string(s.b[s.i:]), lit) {
		return errSyntax
	}
	s.i += len(lit)
	return nil
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return errSyntax
	}
	if s.peek() == '.' {
		s.i++
		if !s.digits() {
			return errSyntax
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !s.digits() {
			return errSyntax
		}
	}
	return nil
}

func (s *scanner) digits() bool {
	start := s.i
	for c := s.peek(); c >= '0' && c <= '9'; c = s.peek() {
		s.i++
	}
	return s.i > start
}

// UsersRevocation is a decoded users.revoked event: the batch of user
// watermarks and the envelope fields a consumer needs.
type UsersRevocation struct {
	EventID   string
	EventTime time.Time
	UsersRevoked
}

// Subject is the state subject the batch belongs on; compare it with the
// subject the message arrived on, as for Revocation.Subject.
func (u UsersRevocation) Subject() string {
	return StatePrefix + u.Tenant + "." + KindUsers + "." + u.EventID
}

// ErrSubjectMismatch is returned by DecodeState for data that names another
// entry than the subject it arrived on. NATS permissions are per subject, so
// a publisher allowed on one tenant's subjects must not revoke another
// tenant's sessions through the payload; consumers skip such messages.
var ErrSubjectMismatch = errors.New("events: data does not match its subject")

// DecodeState decodes a message of the state stream that arrived on
// subject, and checks that its data belongs there. A batch of users
// (users.revoked) returns its users, and r holds what they share: Kind is
// KindUsers, ID is empty, At is the batch's watermark. Any other revocation
// returns users nil. Errors wrap ErrUnknownType (skip the message
// silently: a type this version does not know), ErrSubjectMismatch, or
// describe undecodable data.
func DecodeState(subject string, data []byte) (r Revocation, users []string, err error) {
	if _, kind, _, perr := ParseStateSubject(subject); perr == nil && kind == KindUsers {
		u, err := DecodeUsersRevoked(data)
		if err != nil {
			return Revocation{}, nil, err
		}
		if u.Subject() != subject {
			return Revocation{}, nil, fmt.Errorf("%w: data of %s on %s", ErrSubjectMismatch, u.Subject(), subject)
		}
		return Revocation{Kind: KindUsers, Tenant: u.Tenant, At: u.NotBefore, OperationID: u.OperationID,
			EventID: u.EventID, EventTime: u.EventTime}, u.Users, nil
	}
	r, err = DecodeRevocation(data)
	if err != nil {
		return Revocation{}, nil, err
	}
	if r.Subject() != subject {
		return Revocation{}, nil, fmt.Errorf("%w: data of %s on %s", ErrSubjectMismatch, r.Subject(), subject)
	}
	return r, nil, nil
}

// DecodeUsersRevoked decodes a users.revoked event. It returns
// ErrUnknownType (wrapped) for any other type.
//
// Every guard decodes every batch of a bulk logout, up to 1,000 users
// each: with encoding/json alone that was 0.21 s of the 1.29 s that ten
// guards spent applying a logout of 100,000 users (docs/benchmarks.md,
// item 45). So an event as evict writes it, which is all but always what
// arrives, is read in one pass (decodeUsersPlain); anything else goes to
// encoding/json, which decides then, and the two agree on every input
// (FuzzDecodeUsersRevoked).
func DecodeUsersRevoked(b []byte) (UsersRevocation, error) {
	ev, ok := decodeUsersPlain(b)
	if !ok {
		ev = Event[UsersRevoked]{}
		if err := json.Unmarshal(b, &ev); err != nil {
			return UsersRevocation{}, fmt.Errorf("events: decode %s: %w", TypeUsersRevoked, err)
		}
	}
	if ev.Type != TypeUsersRevoked {
		return UsersRevocation{}, fmt.Errorf("%w: %q", ErrUnknownType, ev.Type)
	}
	u := UsersRevocation{EventID: ev.ID, EventTime: ev.Time, UsersRevoked: ev.Data}
	if err := checkIDs("tenant", u.Tenant, "batch", u.EventID); err != nil {
		return UsersRevocation{}, fmt.Errorf("events: %s: %w", TypeUsersRevoked, err)
	}
	if len(u.Users) == 0 || len(u.Users) > MaxUsersPerEvent {
		return UsersRevocation{}, fmt.Errorf("events: %s: %d users, want 1 to %d", TypeUsersRevoked, len(u.Users), MaxUsersPerEvent)
	}
	for i, user := range u.Users {
		// The field's name is formatted only for the error: every guard
		// checks every user of every batch.
		if !ValidID(user) {
			return UsersRevocation{}, fmt.Errorf("events: %s: %w", TypeUsersRevoked, CheckID(fmt.Sprintf("users[%d]", i), user))
		}
	}
	if u.NotBefore.IsZero() {
		return UsersRevocation{}, fmt.Errorf("events: %s: missing not_before", TypeUsersRevoked)
	}
	return u, nil
}

// decodeUsersPlain decodes b as json.Unmarshal into an Event[UsersRevoked]
// would, if b keeps to what evict writes: valid JSON, every key spelt as
// its field's tag and none twice, every string plain ASCII without escapes,
// data an object and its users an array of strings. Otherwise it reports
// false, and the caller asks encoding/json: the rules for keys in other
// cases, escapes, nulls and wrong types are its own, and are left to it.
func decodeUsersPlain(b []byte) (Event[UsersRevoked], bool) {
	var ev Event[UsersRevoked]
	var data, users span
	if !scanPlain(b, 0, len(b), []plainField{
		{name: "specversion", str: &ev.SpecVersion}, {name: "id", str: &ev.ID}, {name: "source", str: &ev.Source},
		{name: "type", str: &ev.Type}, {name: "subject", str: &ev.Subject}, {name: "time", tm: &ev.Time},
		{name: "datacontenttype", str: &ev.DataContentType}, {name: "data", raw: &data},
	}) || data == (span{}) || b[data.start] != '{' {
		return Event[UsersRevoked]{}, false
	}
	d := &ev.Data
	if !scanPlain(b, data.start, data.end, []plainField{
		{name: "tenant", str: &d.Tenant}, {name: "users", raw: &users}, {name: "not_before", tm: &d.NotBefore},
		{name: "operation_id", str: &d.OperationID}, {name: "cause", str: &d.Cause}, {name: "group", str: &d.Group},
		{name: "reason", str: &d.Reason},
	}) {
		return Event[UsersRevoked]{}, false
	}
	if users != (span{}) {
		var ok bool
		if d.Users, ok = plainStrings(b[users.start:users.end]); !ok {
			return Event[UsersRevoked]{}, false
		}
	}
	return ev, true
}

// plainField is a key that scanPlain decodes into str (a plain string), tm
// (a time) or raw (any value, left for the caller).
type plainField struct {
	name string
	str  *string
	tm   *time.Time
	raw  *span
	seen bool
}

// scanPlain scans the JSON object at b[from:to], which must be all of it
// but white space, into fields, and reports false for anything
// decodeUsersPlain leaves to encoding/json.
func scanPlain(b []byte, from, to int, fields []plainField) bool {
	ok := true
	object, err := scanObject(b[:to], from, func(key []byte, v span) {
		i := slices.IndexFunc(fields, func(f plainField) bool { return f.name == string(key) })
		if i < 0 || fields[i].seen {
			ok = false
			return
		}
		f := &fields[i]
		f.seen = true
		switch {
		case f.str != nil:
			raw, isPlain, err := stringValue(b, v)
			if err != nil || !isPlain {
				ok = false
				return
			}
			*f.str = string(raw[1 : len(raw)-1])
		case f.tm != nil:
			if b[v.start] != '"' || f.tm.UnmarshalJSON(b[v.start:v.end]) != nil {
				ok = false
			}
		default:
			*f.raw = v
		}
	})
	return err == nil && object && ok
}

// plainStrings decodes a JSON array, already checked to be valid, of plain
// ASCII strings without escapes; anything else reports false. The strings
// share one allocation.
func plainStrings(arr []byte) ([]string, bool) {
	if len(arr) < 2 || arr[0] != '[' {
		return nil, false
	}
	all := string(arr)
	out := make([]string, 0, bytes.Count(arr, []byte{','})+1)
	for i := 1; i < len(arr); {
		switch arr[i] {
		case ' ', '\t', '\n', '\r', ',', ']':
			i++
		case '"':
			// Valid JSON: the next quote ends the string unless a
			// backslash escapes it, and any backslash sends the array
			// to encoding/json.
			n := bytes.IndexByte(arr[i+1:], '"')
			str := arr[i+1 : i+1+n]
			for _, c := range str {
				if c == '\\' || c >= 0x80 {
					return nil, false
				}
			}
			out = append(out, all[i+1:i+1+n])
			i += n + 2
		default: // null, a number, an object …
			return nil, false
		}
	}
	return out, true
}
