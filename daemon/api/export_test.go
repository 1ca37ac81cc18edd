package api

import "time"

// Internals exported to the external tests.

var ConnErrorForTest = connError

func (s *Server) SetTimeoutsForTest(readHeader, read, write, idle time.Duration, maxHeaderBytes int) {
	s.readHeaderTimeout, s.readTimeout, s.writeTimeout, s.idleTimeout = readHeader, read, write, idle
	s.maxHeaderBytes = maxHeaderBytes
}
