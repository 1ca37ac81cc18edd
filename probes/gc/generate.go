package gc

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../../bpf" -target bpfel -type gc_event gc ../../bpf/gc.bpf.c
