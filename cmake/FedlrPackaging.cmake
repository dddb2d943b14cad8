# Install rules beyond the programs (man pages, example configs, docs) and the
# Debian package (CPack). Included at the end of the top-level CMakeLists.txt.
#
#   cmake --install build --prefix /usr/local   # programs, man pages, examples
#   (cd build && cpack -G DEB)                  # build/fedlr_<version>_<arch>.deb
#
# One package carries everything, libfedlr included (cmake/FedlrLibrary.cmake:
# libfedlr.so.0, libfedlr.a, fedlr.h, fedlr.pc): fedlr-client needs the shared
# library anyway, and the header, archive and .pc add about 1 MB, not worth a
# separate libfedlr-dev package.
include(GNUInstallDirs)

# ---- man pages, generated at build time from each program's --help ----
# help2man (Debian package help2man) when it is installed, else
# cmake/help2man.sh, a small converter of our --help layout; both add the
# sections in docs/man/<program>.h2m. Off in sanitizer builds, where running
# the programs at build time would put sanitizer reports into the build.
option(FEDLR_MANPAGES "Generate man pages from --help at build time" ON)
set(FEDLR_PROGRAMS fedlr-sim fedlr-sweep fedlr-coordinator fedlr-client fedlr-keygen)
set(FEDLR_MAN_NAME_fedlr-sim "simulate federated training: the coordinator and every client in one process")
set(FEDLR_MAN_NAME_fedlr-sweep "run a grid of simulated federated runs (rates, schedules, seeds) and rank them")
set(FEDLR_MAN_NAME_fedlr-coordinator "federated-learning coordinator: round engine, FedAvg and evaluation over ZeroMQ")
set(FEDLR_MAN_NAME_fedlr-client "federated-learning client: trains locally on the rounds a coordinator sends it")
set(FEDLR_MAN_NAME_fedlr-keygen "make a CurveZMQ key pair for fedlr-coordinator and fedlr-client")
if(FEDLR_MANPAGES AND NOT FEDLR_SANITIZE AND NOT FEDLR_TSAN AND NOT CMAKE_CROSSCOMPILING)
  find_program(FEDLR_HELP2MAN help2man)
  set(FEDLR_MAN_DIR ${CMAKE_BINARY_DIR}/man)
  set(FEDLR_MAN_PAGES)
  foreach(prog ${FEDLR_PROGRAMS})
    set(out ${FEDLR_MAN_DIR}/${prog}.1)
    set(inc ${CMAKE_SOURCE_DIR}/docs/man/${prog}.h2m)
    # FEDLR_NO_REEXEC: --help needs no BLAS core, so skip the CPUID re-exec.
    if(FEDLR_HELP2MAN)
      set(gen ${FEDLR_HELP2MAN} --no-info --no-discard-stderr --version-string=${PROJECT_VERSION}
              "--name=${FEDLR_MAN_NAME_${prog}}" --include=${inc} --output=${out} $<TARGET_FILE:${prog}>)
    else()
      set(gen bash ${CMAKE_SOURCE_DIR}/cmake/help2man.sh $<TARGET_FILE:${prog}> ${prog}
              ${PROJECT_VERSION} "${FEDLR_MAN_NAME_${prog}}" ${inc} ${out})
    endif()
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${FEDLR_MAN_DIR}
      COMMAND ${CMAKE_COMMAND} -E env FEDLR_NO_REEXEC=1 ${gen}
      DEPENDS ${prog} ${inc} ${CMAKE_SOURCE_DIR}/cmake/help2man.sh
      COMMENT "man page ${prog}.1"
      VERBATIM)
    list(APPEND FEDLR_MAN_PAGES ${out})
  endforeach()
  add_custom_target(fedlr_man ALL DEPENDS ${FEDLR_MAN_PAGES})
  install(FILES ${FEDLR_MAN_PAGES} DESTINATION ${CMAKE_INSTALL_MANDIR}/man1)
endif()

# ---- example configs (valid --config files; tests/it_docker.sh loads them) and docs ----
install(FILES ${CMAKE_SOURCE_DIR}/examples/sim.ini ${CMAKE_SOURCE_DIR}/examples/coordinator.ini
              ${CMAKE_SOURCE_DIR}/examples/client.ini ${CMAKE_SOURCE_DIR}/docker/compose.yaml
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
file(GLOB FEDLR_EXPERIMENTS ${CMAKE_SOURCE_DIR}/examples/experiments/*)
install(FILES ${FEDLR_EXPERIMENTS} DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples/experiments)
install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/docs/protocol.md
              ${CMAKE_SOURCE_DIR}/docs/experiments.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
file(GLOB FEDLR_EXPERIMENT_CHARTS ${CMAKE_SOURCE_DIR}/docs/experiments/*.svg)
install(FILES ${FEDLR_EXPERIMENT_CHARTS} DESTINATION ${CMAKE_INSTALL_DOCDIR}/experiments)
# fedlr-sim and fedlr-coordinator hold code generated from TensorBoard's
# protos (Apache-2.0), whose licence goes with them.
install(FILES ${CMAKE_SOURCE_DIR}/third_party/tensorboard/LICENSE
              ${CMAKE_SOURCE_DIR}/third_party/tensorboard/README.md
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/third_party/tensorboard)

# ---- Debian package: cpack -G DEB in the build directory ----
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME fedlr)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR fedlr)
set(CPACK_PACKAGE_CONTACT "fedlr maintainers <fedlr@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "federated-learning coordinator, client and simulator")
set(CPACK_PACKAGE_DESCRIPTION
  "fedlr trains a model with FedAvg across clients that keep their data. fedlr-coordinator
broadcasts the global model and a round-indexed learning rate over ZeroMQ, fedlr-client trains
locally with minibatch SGD (or momentum, Nesterov, Adagrad, RMSprop, Adam), and fedlr-sim runs
the same engine and trainer with many virtual clients in one process. libfedlr (fedlr.h,
pkg-config fedlr) lets a C program train a model of its own as a fedlr client.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION science)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The shared libraries the programs link (ldd), by their Debian bookworm
# package names; libopenblas.so.0 comes from any libopenblas0-* flavour.
set(CPACK_DEBIAN_PACKAGE_DEPENDS
  "libc6 (>= 2.34), libzmq5, libprotobuf-c1, libopenblas0 | libopenblas0-pthread, libuv1, zlib1g, libinih1")
# The Python client package (python/fedlr, in dist-packages) needs these; its
# fedlr.torch helper needs PyTorch.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "dataset-fashion-mnist, python3-numpy, python3-zmq, python3-protobuf")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS python3-torch)
include(CPack)
