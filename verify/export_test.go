package verify

import "time"

// SetConnectTimeout sets connectTimeout and returns the old value.
func SetConnectTimeout(d time.Duration) time.Duration {
	old := connectTimeout
	connectTimeout = d
	return old
}
