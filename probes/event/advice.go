package event

import "fmt"

// Linux madvise advice values gopulse names (include/uapi/asm-generic/mman-common.h).
const (
	AdvNormal     = 0
	AdvRandom     = 1
	AdvSequential = 2
	AdvWillNeed   = 3
	AdvDontNeed   = 4
	AdvFree       = 8
	AdvRemove     = 9
	AdvDontFork   = 10
	AdvDoFork     = 11
	AdvMergeable  = 12
	AdvUnmergable = 13
	AdvHugePage   = 14
	AdvNoHugePage = 15
	AdvDontDump   = 16
	AdvDoDump     = 17
	AdvWipeOnFork = 18
	AdvKeepOnFork = 19
	AdvCold       = 20
	AdvPageOut    = 21
	AdvPopulateR  = 22
	AdvPopulateW  = 23
	AdvDontNeedLk = 24
	AdvCollapse   = 25
	// AdviceSlots is the number of advice slots the kernel side counts
	// (bpf/madvise.h MADV_SLOTS); the last one gathers every advice value
	// >= AdviceSlots-1 and every negative one.
	AdviceSlots = 32
)

// AdviceSlot is the slot the kernel side counts an advice value in.
func AdviceSlot(adv int32) int {
	if adv < 0 || adv >= AdviceSlots {
		return AdviceSlots - 1
	}
	return int(adv)
}

var adviceNames = map[int32]string{
	AdvNormal: "normal", AdvRandom: "random", AdvSequential: "sequential", AdvWillNeed: "willneed",
	AdvDontNeed: "dontneed", AdvFree: "free", AdvRemove: "remove", AdvDontFork: "dontfork",
	AdvDoFork: "dofork", AdvMergeable: "mergeable", AdvUnmergable: "unmergeable",
	AdvHugePage: "hugepage", AdvNoHugePage: "nohugepage", AdvDontDump: "dontdump",
	AdvDoDump: "dodump", AdvWipeOnFork: "wipeonfork", AdvKeepOnFork: "keeponfork",
	AdvCold: "cold", AdvPageOut: "pageout", AdvPopulateR: "populate_read",
	AdvPopulateW: "populate_write", AdvDontNeedLk: "dontneed_locked", AdvCollapse: "collapse",
}

// AdviceName is the MADV_ name of an advice value.
func AdviceName(adv int32) string {
	if n, ok := adviceNames[adv]; ok {
		return n
	}
	return fmt.Sprintf("advice_%d", adv)
}

// Releases reports whether an advice gives memory back to the OS (RSS
// drops at once or under pressure). The kernel side walks the user stack
// for exactly these (bpf/madvise.bpf.c; checked by probes/madvise's
// contract test).
func Releases(adv int32) bool {
	switch adv {
	case AdvDontNeed, AdvFree, AdvRemove, AdvDontNeedLk, AdvPageOut:
		return true
	}
	return false
}

// Who asked for a madvise, from the call's user stack (Madvise.Source).
const (
	SourceBackground = "background_scavenger" // runtime.bgscavenge
	SourceAlloc      = "allocation"           // scavenging by an allocation (memory limit, heap growth)
	SourceForced     = "free_os_memory"       // debug.FreeOSMemory
	SourceOther      = "other"                // e.g. huge page hints at heap growth
	SourceUnknown    = "unknown"              // stack unreadable
)
