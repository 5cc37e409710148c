package wallaroo

import "testing"

// For the tests of package wallaroo_test: the buffers of the component's exports, both ways,
// so that those tests see what a host would.

// WireBatch is batch as the component receives it from the host.
func WireBatch(t *testing.T, batch []Message) []Message {
	t.Helper()
	got, err := decodeBatch(hostBatch(batch))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// WireOutputs is out as the host receives it from the component.
func WireOutputs(t *testing.T, out []Output) []Output {
	t.Helper()
	return hostOutputs(t, appendOutputs(nil, out))
}

// WireChanges is entries, as snapshot-changed returns them, as the host receives them.
func WireChanges(t *testing.T, entries []StateEntry) []StateEntry {
	t.Helper()
	return hostChanges(t, appendEntries(nil, entries))
}
