# xcore-probe: the cache-line round trip between two CPUs, taken around
# same-host runs to say where the (v)CPUs sat (see bench/xcore_probe.c).
add_executable(xcore-probe ${CMAKE_CURRENT_LIST_DIR}/xcore_probe.c)
target_link_libraries(xcore-probe PRIVATE Threads::Threads)
