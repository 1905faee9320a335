# GPU copy benchmark (bench_gpu_copy.c) and its side-by-side script
# (bench/gpu-copy). Built against the emulated runtime of tests/cuda_emu by
# soname; on a GPU machine the script points LD_LIBRARY_PATH at the real one.
set(TESHIM_CUDA_INCLUDE /usr/local/cuda/include CACHE PATH
    "CUDA toolkit headers used to build the emulated runtime and its host programs")
if(EXISTS ${TESHIM_CUDA_INCLUDE}/cuda_runtime_api.h)
  add_executable(bench_gpu_copy ${CMAKE_CURRENT_LIST_DIR}/bench_gpu_copy.c)
  target_include_directories(bench_gpu_copy PRIVATE ${TESHIM_CUDA_INCLUDE})
  target_link_libraries(bench_gpu_copy PRIVATE cemu_cudart${TESHIM_CUDART_SOVERSION})
  # A smoke run (tiny sizes, no timing asserted): the script and the
  # correctness checks work, plain, under teshim (bounce, register cache,
  # fresh destinations, two thread counts) and pinned.
  add_test(NAME bench_gpu_copy_smoke COMMAND sh ${CMAKE_CURRENT_LIST_DIR}/gpu-copy
    --build ${CMAKE_BINARY_DIR} --min 512K --max 2M --seconds 0.01 --threads 1,2)
  set_tests_properties(bench_gpu_copy_smoke PROPERTIES TIMEOUT 120)
endif()
