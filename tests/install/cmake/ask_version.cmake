# Asks the installed version file what find_package(netsock <req>) asks it, for each request
# in REQS, and prints "<req>=TRUE|FALSE" per line. Run by check.sh:
#   cmake -Ddir=<prefix>/lib/cmake/netsock -DREQS="0.1;1.0" -P ask_version.cmake
foreach(req ${REQS})
  string(REGEX MATCH "^[0-9]+" PACKAGE_FIND_VERSION_MAJOR "${req}")
  set(PACKAGE_FIND_VERSION "${req}")
  unset(PACKAGE_VERSION_COMPATIBLE)
  include("${dir}/netsockConfigVersion.cmake")
  message("${req}=${PACKAGE_VERSION_COMPATIBLE}")
endforeach()
