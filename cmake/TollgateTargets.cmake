# SPDX-License-Identifier: Apache-2.0
# Helpers so every target gets the same warnings, include root and C++ standard.

set(TOLLGATE_WARNINGS -Wall -Wextra -Wpedantic)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  # GCC 12 false positive on Asio's awaitable frame allocator (operator new/delete pairs match).
  # And GCC 12 -O3 false positives on std::string copies (GCC bug 105329).
  list(APPEND TOLLGATE_WARNINGS -Wno-mismatched-new-delete -Wno-restrict)
endif()
if(TOLLGATE_WERROR)
  list(APPEND TOLLGATE_WARNINGS -Werror)
endif()

# tollgate_add_library(NAME SRCS a.cpp b.cpp DEPS dep1 dep2)
function(tollgate_add_library name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SRCS})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(${name} PRIVATE ${TOLLGATE_WARNINGS})
  # Asio and Beast are compiled once, in gateway/core/asio_impl.cpp (separate compilation).
  # Asio's blocks (coroutine frames, handlers) come from operator new, not aligned_alloc: with
  # jemalloc, aligned_alloc takes its slow path (~140 instructions a call, ~20 calls a request),
  # and nothing Asio allocates for us needs more than operator new's 16-byte alignment (bench:
  # 3.5% fewer instructions per request, plain and policy; docs/benchmarks.md).
  target_compile_definitions(${name} PUBLIC BOOST_ASIO_SEPARATE_COMPILATION BOOST_BEAST_SEPARATE_COMPILATION
                                            BOOST_ASIO_NO_DEPRECATED BOOST_ASIO_DISABLE_STD_ALIGNED_ALLOC
                                            BOOST_ASIO_DISABLE_BOOST_ALIGN)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
endfunction()

# tollgate_add_executable(NAME SRCS ... DEPS ...)
function(tollgate_add_executable name)
  cmake_parse_arguments(ARG "" "" "SRCS;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SRCS})
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(${name} PRIVATE ${TOLLGATE_WARNINGS})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS})
endfunction()
