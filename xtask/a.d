a.o: /work/main/xtask/a.rs
# env-dep:OBJTREE
