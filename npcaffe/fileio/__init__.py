"""File formats: prototxt, caffemodel/binaryproto, solverstate, and the V0/V1 upgrades. No compute here."""
