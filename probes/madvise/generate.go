package madvise

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../../bpf" -target bpfel -type madv_event -type madv_totals madvise ../../bpf/madvise.bpf.c
