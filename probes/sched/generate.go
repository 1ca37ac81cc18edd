package sched

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../../bpf" -target bpfel -type sched_proc sched ../../bpf/sched.bpf.c
