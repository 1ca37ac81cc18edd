package mheaplock

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../../bpf" -target bpfel -type lock_proc mheaplock ../../bpf/mheaplock.bpf.c
