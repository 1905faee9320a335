# teshim-bench: engine bandwidth/latency (see bench/tcp-vs-iperf3).
add_executable(teshim-bench ${CMAKE_CURRENT_LIST_DIR}/bench_engine.c)
target_link_libraries(teshim-bench PRIVATE teshim_engine_static Threads::Threads)
