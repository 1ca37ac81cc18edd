package sched

//go:generate go tool bpf2go -cflags "-O2 -g -Wall -Werror -I../../bpf" -target amd64,arm64 -type sched_proc -type sched_contract -type hist_contract sched ../../bpf/sched.bpf.c
