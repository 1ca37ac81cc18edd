package gc

//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -I../../bpf" -target amd64,arm64 -type gc_record -type gc_layout -type gc_contract -type gp_share -type share_contract gc ../../bpf/gc.bpf.c
