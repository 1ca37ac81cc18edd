package gc

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../../bpf" -target bpfel -type gc_record -type gc_layout gc ../../bpf/gc.bpf.c
