package flowschema

// HasKeyPrefix reports whether the attribute key k begins with prefix, as
// strings.HasPrefix does, but compares the prefix's last byte first: the
// keys of a flow record mostly share their first bytes (flowattr.,
// network.) and differ from an owner prefix near its end, so that most
// keys are told apart without comparing the rest.
func HasKeyPrefix(k, prefix string) bool {
	n := len(prefix)
	return len(k) >= n && (n == 0 || k[n-1] == prefix[n-1]) && k[:n] == prefix
}
