# Cost of the allocator and mapping hooks (the register cache's watch): no
# shim, shim with the cache off, shim with it on, side by side in one run.
#   cmake --build build --target bench-mem-overhead
add_executable(bench_mem_overhead ${CMAKE_CURRENT_LIST_DIR}/bench_mem_overhead.c)
target_link_libraries(bench_mem_overhead PRIVATE Threads::Threads)
add_custom_target(bench-mem-overhead
  COMMAND bench_mem_overhead --lib $<TARGET_FILE:teshim>
  DEPENDS bench_mem_overhead teshim
  COMMENT "memory hook overhead (no shim / register cache off / on)" VERBATIM USES_TERMINAL)
