package probes

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
)

// Ring reads the fixed-layout records of type T (a bpf2go -type struct)
// from a BPF ring buffer. Reading stops when the ring is closed.
type Ring[T any] struct {
	name     string
	rd       *ringbuf.Reader
	consumed atomic.Uint64
	drains   chan chan struct{} // Drain requests, served by Read
}

// maxDrains bounds the Drain requests queued at once; more wait (within
// their context) for room.
const maxDrains = 64

// NewRing opens a reader on m; name labels errors.
func NewRing[T any](name string, m *ebpf.Map) (*Ring[T], error) {
	// Records are copied byte for byte into a T (deliver): T must be of
	// fixed size with every byte a field's (no pointer, no implicit
	// padding), as bpf2go's structs are.
	var zero T
	if n := binary.Size(zero); n != int(unsafe.Sizeof(zero)) {
		return nil, fmt.Errorf("%s ring buffer: record type %T is not a plain C layout (%d bytes encoded, %d in memory)", name, zero, n, unsafe.Sizeof(zero))
	}
	rd, err := ringbuf.NewReader(m)
	if err != nil {
		return nil, fmt.Errorf("%s ring buffer: %w", name, err)
	}
	return &Ring[T]{name: name, rd: rd, drains: make(chan chan struct{}, maxDrains)}, nil
}

// PollEvery is how often a reader looks for records submitted without a
// wakeup (submit_batched in bpf/gopulse.h): the longest a record waits
// when nobody asks (Drain).
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
			if errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ringbuf.ErrFlushed) {
				// A Drain queued while the last one was served may have
				// had its wakeup consumed by it: serve until none waits.
				for len(r.drains) > 0 {
					if err := r.serveDrains(&rec, &v, fn); err != nil {
						return err
					}
				}
				r.rd.SetDeadline(time.Now().Add(PollEvery))
				continue
			}
			if errors.Is(err, ringbuf.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read %s events: %w", r.name, err)
		}
		if err := r.deliver(&rec, &v, fn); err != nil {
			return err
		}
	}
}

func (r *Ring[T]) deliver(rec *ringbuf.Record, v *T, fn func(*T)) error {
	// T is a bpf2go struct: the C struct's own layout in native byte
	// order, explicit padding, no pointers (NewRing checks it is of fixed
	// size). So a record is copied, not decoded field by field:
	// binary.Read's reflection took 9.1 µs for a 1 KiB record of arrays
	// (~85 µs on a loaded VM, the reader's bottleneck under a GC flood),
	// the copy 25 ns.
	size := int(unsafe.Sizeof(*v))
	if len(rec.RawSample) < size {
		return fmt.Errorf("decode %s event: %d bytes, want %d", r.name, len(rec.RawSample), size)
	}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(v)), size), rec.RawSample)
	fn(v)
	r.consumed.Add(1)
	return nil
}

// serveDrains answers the Drain requests queued so far: it reads the ring
// until it is seen empty (a deadline already passed makes ReadInto read
// what is there without waiting), which is after every request was
// queued, so each request sees every record submitted before it.
func (r *Ring[T]) serveDrains(rec *ringbuf.Record, v *T, fn func(*T)) error {
	var waiting []chan struct{}
	for len(waiting) < maxDrains {
		select {
		case d := <-r.drains:
			waiting = append(waiting, d)
			continue
		default:
		}
		break
	}
	if len(waiting) == 0 {
		return nil
	}
	defer func() {
		for _, d := range waiting {
			close(d)
		}
	}()
	r.rd.SetDeadline(time.Now())
	for {
		err := r.rd.ReadInto(rec)
		switch {
		case err == nil:
			if err := r.deliver(rec, v, fn); err != nil {
				return err
			}
		case errors.Is(err, ringbuf.ErrFlushed):
			// A wakeup of an earlier Drain: keep reading to empty.
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		default:
			return fmt.Errorf("read %s events: %w", r.name, err)
		}
	}
}

// Drain returns once the reader has delivered every record submitted
// before the call (or ctx is done: the reader is stopped or stuck). It
// wakes the reader at once rather than waiting for its next poll: an API
// answer then includes everything the kernel recorded before the request.
func (r *Ring[T]) Drain(ctx context.Context) error {
	done := make(chan struct{})
	select {
	case r.drains <- done:
	case <-ctx.Done():
		return fmt.Errorf("drain %s events: %w", r.name, ctx.Err())
	}
	if err := r.rd.Flush(); err != nil {
		return fmt.Errorf("drain %s events: wake reader: %w", r.name, err)
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drain %s events: %w", r.name, ctx.Err())
	}
}

// Backlog is the unread bytes and the records read so far: a backlog that
// stays while the count stands still is a stuck reader.
func (r *Ring[T]) Backlog() (pending int, consumed uint64) {
	return r.rd.AvailableBytes(), r.consumed.Load()
}

// Close ends Read.
func (r *Ring[T]) Close() error { return r.rd.Close() }
