package gc

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

func decode(raw []byte, ev *Event) error {
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, ev); err != nil {
		return fmt.Errorf("decode gc event (%d bytes): %w", len(raw), err)
	}
	return nil
}
