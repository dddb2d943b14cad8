# libfedlr (lib/, include/fedlr.h): the C client library, built shared and
# static from the same objects and installed with its header and fedlr.pc.
# Included by the top-level CMakeLists.txt after common/ and proto/.
#
# Only fedlr_* is public: lib/ is compiled with -fvisibility=hidden and marks
# its API with FEDLR_API (FEDLR_BUILDING), and the common/ modules it needs
# are compiled again here, hidden too, so the shared library exports nothing
# else (tests/it_lib.sh checks with nm -D). The static archive holds one
# relocatable object whose other symbols are made local (ld -r, then
# objcopy --localize-hidden), so an application's own names cannot clash
# with fedlr's internals either way.
include(GNUInstallDirs)

# The version is the header's (FEDLR_VERSION_*), the ABI's major the SOVERSION.
file(STRINGS ${CMAKE_SOURCE_DIR}/include/fedlr.h FEDLR_VERSION_LINES
     REGEX "^#define FEDLR_VERSION_(MAJOR|MINOR|PATCH) ")
foreach(line ${FEDLR_VERSION_LINES})
  string(REGEX MATCH "FEDLR_VERSION_([A-Z]+) ([0-9]+)" _ "${line}")
  set(FEDLR_LIB_${CMAKE_MATCH_1} ${CMAKE_MATCH_2})
endforeach()
set(FEDLR_LIB_VERSION ${FEDLR_LIB_MAJOR}.${FEDLR_LIB_MINOR}.${FEDLR_LIB_PATCH})
if(NOT FEDLR_LIB_VERSION VERSION_EQUAL PROJECT_VERSION)
  message(FATAL_ERROR "include/fedlr.h says version ${FEDLR_LIB_VERSION}, the project ${PROJECT_VERSION}: "
                      "bump FEDLR_VERSION_* with project(VERSION)")
endif()
set(FEDLR_LIB_SOVERSION 0)

# What the library needs of common/: the codec and what it names.
set(FEDLR_LIB_COMMON error wire layout model model_cnn layers gemm optim sched keys safetensors file zmon rng)
set(FEDLR_LIB_SRC)
foreach(m ${FEDLR_LIB_COMMON})
  list(APPEND FEDLR_LIB_SRC ${CMAKE_SOURCE_DIR}/common/fl_${m}.c)
endforeach()
file(GLOB FEDLR_LIB_OWN CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/lib/*.c)
list(APPEND FEDLR_LIB_SRC ${FEDLR_LIB_OWN} ${FEDLR_GEN_DIR}/fedlr.pb-c.c)

add_library(fedlr_lib_obj OBJECT ${FEDLR_LIB_SRC})
set_target_properties(fedlr_lib_obj PROPERTIES POSITION_INDEPENDENT_CODE ON
                      C_VISIBILITY_PRESET hidden)
target_compile_definitions(fedlr_lib_obj PRIVATE FEDLR_BUILDING)
target_include_directories(fedlr_lib_obj PRIVATE ${CMAKE_SOURCE_DIR}/include
                           ${CMAKE_SOURCE_DIR}/lib ${CMAKE_SOURCE_DIR}/common ${FEDLR_GEN_DIR})
target_link_libraries(fedlr_lib_obj PRIVATE PkgConfig::ZMQ PkgConfig::PROTOBUFC
                      PkgConfig::OPENBLAS PkgConfig::ZLIB)

# libfedlr.so.0
add_library(fedlr SHARED $<TARGET_OBJECTS:fedlr_lib_obj>)
set_target_properties(fedlr PROPERTIES VERSION ${FEDLR_LIB_VERSION}
                      SOVERSION ${FEDLR_LIB_SOVERSION} PUBLIC_HEADER ${CMAKE_SOURCE_DIR}/include/fedlr.h)
target_include_directories(fedlr INTERFACE ${CMAKE_SOURCE_DIR}/include)
target_link_options(fedlr PRIVATE -Wl,--no-undefined -Wl,--as-needed)
target_link_libraries(fedlr PRIVATE PkgConfig::ZMQ PkgConfig::PROTOBUFC PkgConfig::OPENBLAS
                      PkgConfig::ZLIB Threads::Threads m)

# libfedlr.a: one object, internals local.
set(FEDLR_LIB_RELOC ${CMAKE_CURRENT_BINARY_DIR}/fedlr_static.o)
add_custom_command(
  OUTPUT ${FEDLR_LIB_RELOC}
  COMMAND ${CMAKE_LINKER} -r -o ${FEDLR_LIB_RELOC} $<TARGET_OBJECTS:fedlr_lib_obj>
  COMMAND ${CMAKE_OBJCOPY} --localize-hidden ${FEDLR_LIB_RELOC}
  DEPENDS fedlr_lib_obj $<TARGET_OBJECTS:fedlr_lib_obj>
  COMMAND_EXPAND_LISTS
  COMMENT "libfedlr.a: one relocatable object, internals local")
add_library(fedlr_static STATIC ${FEDLR_LIB_RELOC})
set_target_properties(fedlr_static PROPERTIES OUTPUT_NAME fedlr LINKER_LANGUAGE C)

# pkg-config, relocatable: the prefix is found from the .pc file's place.
file(RELATIVE_PATH FEDLR_PC_TO_PREFIX ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" FEDLR_PC_TO_PREFIX "${FEDLR_PC_TO_PREFIX}")
configure_file(${CMAKE_SOURCE_DIR}/cmake/fedlr.pc.in ${CMAKE_CURRENT_BINARY_DIR}/fedlr.pc @ONLY)

install(TARGETS fedlr fedlr_static
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        PUBLIC_HEADER DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/fedlr.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
