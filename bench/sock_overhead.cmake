# Cost of the socket hooks per connect/accept/close: no shim, shim with no
# TCP policy, shim with a policy in scope, side by side in one run.
#   cmake --build build --target bench-sock-overhead
add_executable(bench_sock_overhead ${CMAKE_CURRENT_LIST_DIR}/bench_sock_overhead.c)
add_custom_target(bench-sock-overhead
  COMMAND bench_sock_overhead --lib $<TARGET_FILE:teshim>
  DEPENDS bench_sock_overhead teshim
  COMMENT "socket hook overhead (no shim / policy off / policy on)" VERBATIM USES_TERMINAL)
