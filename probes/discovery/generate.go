package discovery

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I../../bpf" -target bpfel -type disc_event disc ../../bpf/discovery.bpf.c
