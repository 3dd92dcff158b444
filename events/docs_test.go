package events_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// eventsDoc is the integrators' description of this package's contract.
const eventsDoc = "../docs/events.md"

// TestDocExamples checks that every JSON example in docs/events.md is valid
// under the schema of its type, and that every type, report types included,
// has an example.
func TestDocExamples(t *testing.T) {
	t.Parallel()
	doc, err := os.ReadFile(eventsDoc)
	if err != nil {
		t.Fatal(err)
	}
	schemas := compileSchemas(t)
	seen := make(map[string]bool)
	for i, block := range jsonBlocks(string(doc)) {
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(block)))
		if err != nil {
			t.Errorf("example %d is not JSON: %v\n%s", i+1, err, block)
			continue
		}
		typ, _ := inst.(map[string]any)["type"].(string)
		sch, ok := schemas[typ]
		if !ok {
			t.Errorf("example %d has unknown type %q", i+1, typ)
			continue
		}
		seen[typ] = true
		if err := sch.Validate(inst); err != nil {
			t.Errorf("example %d (%s) is invalid:\n%v", i+1, typ, err)
		}
	}
	for _, typ := range schemaTypes() {
		if !seen[typ] {
			t.Errorf("%s has no example in %s", typ, eventsDoc)
		}
	}
}

// jsonBlocks returns the contents of the ```json fences of a Markdown text.
func jsonBlocks(md string) []string {
	var blocks []string
	for {
		_, after, ok := strings.Cut(md, "```json\n")
		if !ok {
			return blocks
		}
		block, rest, ok := strings.Cut(after, "```")
		if !ok {
			return blocks
		}
		blocks = append(blocks, block)
		md = rest
	}
}
