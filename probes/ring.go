package probes

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// Ring reads the fixed-layout records of type T (a bpf2go -type struct)
// from a BPF ring buffer. Reading stops when the ring is closed.
type Ring[T any] struct {
	name     string
	rd       *ringbuf.Reader
	consumed atomic.Uint64
}

// NewRing opens a reader on m; name labels errors.
func NewRing[T any](name string, m *ebpf.Map) (*Ring[T], error) {
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, fmt.Errorf("%s ring buffer: %w", name, err)
	}
	return &Ring[T]{name: name, rd: rd}, nil
}

// PollEvery is how often a reader looks for records submitted without a
// wakeup (submit_batched in bpf/gopulse.h): the longest a record waits.
const PollEvery = time.Second

// Read delivers records to fn until the ring is closed or ctx is done. fn
// runs on the reader's goroutine: while it runs the ring fills, and once
// full the kernel side drops and counts.
func (r *Ring[T]) Read(ctx context.Context, fn func(*T)) error {
	stop := context.AfterFunc(ctx, func() { r.rd.Close() })
	defer stop()
	var rec ringbuf.Record
	var v T
	// The deadline is renewed only when it fired: records in the ring are
	// read whether or not it has passed, so a steady flow needs no clock
	// read per record, and an empty ring is waited on for PollEvery.
	r.rd.SetDeadline(time.Now().Add(PollEvery))
	for {
		if err := r.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				r.rd.SetDeadline(time.Now().Add(PollEvery))
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s events: %w", r.name, err)
		}
		if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &v); err != nil {
			return fmt.Errorf("decode %s event (%d bytes): %w", r.name, len(rec.RawSample), err)
		}
		fn(&v)
		r.consumed.Add(1)
	}
}

// Backlog is the unread bytes and the records read so far: a backlog that
// stays while the count stands still is a stuck reader.
func (r *Ring[T]) Backlog() (pending int, consumed uint64) {
	return r.rd.AvailableBytes(), r.consumed.Load()
}

// Close ends Read.
func (r *Ring[T]) Close() error { return r.rd.Close() }
