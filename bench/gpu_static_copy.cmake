# bench/gpu_static_copy.c built the way nvcc builds a CUDA program by
# default (the runtime linked in statically), for bench/gpu-check's
# static-runtime step. Only where nvcc is found; it compiles and links
# without a GPU, so the carried build folder has the binary.
find_program(TESHIM_NVCC nvcc PATHS /usr/local/cuda/bin)
if(TESHIM_NVCC)
  set(gsc_out ${CMAKE_BINARY_DIR}/bin/gpu_static_copy)
  add_custom_command(OUTPUT ${gsc_out}
    COMMAND ${TESHIM_NVCC} -O2 -Xcompiler -Wall,-Wextra,-Werror -o ${gsc_out}
            ${CMAKE_CURRENT_LIST_DIR}/gpu_static_copy.c -lpthread
    DEPENDS ${CMAKE_CURRENT_LIST_DIR}/gpu_static_copy.c
    COMMENT "nvcc (static CUDA runtime): gpu_static_copy" VERBATIM)
  add_custom_target(gpu_static_copy ALL DEPENDS ${gsc_out})
else()
  message(STATUS "bench: no nvcc; gpu_static_copy (bench/gpu-check's static-runtime step) not built")
endif()
