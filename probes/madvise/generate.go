package madvise

//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -I../../bpf" -target amd64,arm64 -type madv_event -type madv_totals -type madv_contract -type gp_share -type share_contract madvise ../../bpf/madvise.bpf.c
