package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// maxJSONDepth bounds nesting: evict's bodies are two levels deep.
const maxJSONDepth = 16

// errStrictJSON wraps what checkStrictJSON refuses.
var errStrictJSON = errors.New("strict JSON")

// checkStrictJSON refuses what encoding/json would quietly accept: a key
// given twice in one object (the last would win, so {"users":[...],
// "users":[]} would log out nobody), nesting deeper than maxJSONDepth, and
// anything after the first value.
func checkStrictJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	type frame struct {
		obj       bool
		expectKey bool
		keys      map[string]struct{}
	}
	var stack []*frame
	values := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			if len(stack) > 0 {
				return fmt.Errorf("%w: unexpected end of the body", errStrictJSON)
			}
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		} else if values++; values > 1 {
			return fmt.Errorf("%w: unexpected data after the JSON value", errStrictJSON)
		}
		if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
			stack = stack[:len(stack)-1]
			continue
		}
		if top != nil && top.obj && top.expectKey {
			key, _ := tok.(string)
			if _, dup := top.keys[key]; dup {
				return fmt.Errorf("%w: key %q appears twice in one object", errStrictJSON, key)
			}
			top.keys[key] = struct{}{}
			top.expectKey = false
			continue
		}
		if top != nil && top.obj {
			top.expectKey = true // this token starts the member's value
		}
		if d, ok := tok.(json.Delim); ok {
			if len(stack) >= maxJSONDepth {
				return fmt.Errorf("%w: nested deeper than %d levels", errStrictJSON, maxJSONDepth)
			}
			stack = append(stack, &frame{obj: d == '{', expectKey: d == '{', keys: map[string]struct{}{}})
		}
	}
}
