# Integration tests: pytest files that drive the real mtlsd binary with real clients. One ctest
# entry per file, so a failure names the area; pytest prints the failing test itself.
#
# The test PKI is made once per run (integration.pki_setup, ~9 s) into <build>/test-pki, made
# read-only and shared by every file through MTLSD_TEST_PKI; integration.pki_unchanged then
# proves no test wrote into it (a test that revokes or re-issues works on pki.copy_to()).
# Files may run several at a time (`ctest -L integration -j4`, as scripts/dev.sh test does):
# every daemon, upstream and helper server binds port 0 or a port free_port() holds for its
# process.
# RUN_SERIAL marks the files that must have the machine to themselves.
if(MTLSD_SANITIZE)
  set(_mtlsd_sanitized 1)
else()
  set(_mtlsd_sanitized 0)
endif()
set(_integration_dir ${CMAKE_CURRENT_LIST_DIR}/integration)
set(_test_pki ${CMAKE_BINARY_DIR}/test-pki)
add_test(NAME integration.pki_setup
         COMMAND /usr/bin/python3 ${_integration_dir}/shared_pki.py make ${_test_pki}
         WORKING_DIRECTORY ${_integration_dir})
add_test(NAME integration.pki_unchanged
         COMMAND /usr/bin/python3 ${_integration_dir}/shared_pki.py check ${_test_pki}
         WORKING_DIRECTORY ${_integration_dir})
set_tests_properties(integration.pki_setup PROPERTIES FIXTURES_SETUP test_pki)
set_tests_properties(integration.pki_unchanged PROPERTIES FIXTURES_CLEANUP test_pki)
set_tests_properties(integration.pki_setup integration.pki_unchanged PROPERTIES
  LABELS integration TIMEOUT 300 ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")

# test_faults: 10,000 concurrent connections, 1 GiB pushes, RSS and CPU-time bounds; it would
# starve a neighbour and its own measurements need a quiet machine.
set(_integration_run_alone test_faults)
# The files that take longest (seconds in the dev suite, most of it waiting on purpose: refresh
# bounds, Workload API backoff, HTTP/2 limits), started first: ctest runs a higher COST first, and
# a fresh clone has no timings of its own (CTestCostData.txt) to go by. Begun near the end of a
# run, one of these alone would hold the machine's other places idle.
set(_integration_costs test_ocsp_refresh_bounds=80 test_spiffe=60 test_http2_limits=50
    test_admin=50 test_staple_without_next_update=40 test_spiffe_updates=40 test_log_sink=35
    test_resumption_facts=30 test_resumption_stale_crl=27 test_http_mode=27 test_health=26
    test_reload_expired_own_certificate=25)
file(GLOB MTLSD_INTEGRATION_TESTS CONFIGURE_DEPENDS ${_integration_dir}/test_*.py)
foreach(test_file IN LISTS MTLSD_INTEGRATION_TESTS)
  get_filename_component(test_name ${test_file} NAME_WE)
  add_test(NAME integration.${test_name}
           # faulthandler: a test still running after 5 minutes prints every thread's stack, so
           # a hang says where it is before the 10-minute TIMEOUT below ends the entry.
           COMMAND /usr/bin/python3 -m pytest -q -p no:cacheprovider --tb=short
                   -o faulthandler_timeout=300 ${test_file}
           WORKING_DIRECTORY ${_integration_dir})
  set_tests_properties(integration.${test_name} PROPERTIES
    LABELS integration
    TIMEOUT 600
    FIXTURES_REQUIRED test_pki
    ENVIRONMENT "MTLSD_BIN=$<TARGET_FILE:mtlsd>;MTLSD_SOURCE_DIR=${PROJECT_SOURCE_DIR};PYTHONDONTWRITEBYTECODE=1;MTLSD_SANITIZED=${_mtlsd_sanitized};MTLSD_TEST_PKI=${_test_pki}")
  foreach(cost IN LISTS _integration_costs)
    if(cost MATCHES "^${test_name}=([0-9]+)$")
      set_tests_properties(integration.${test_name} PROPERTIES COST ${CMAKE_MATCH_1})
    endif()
  endforeach()
  if(test_name IN_LIST _integration_run_alone)
    set_tests_properties(integration.${test_name} PROPERTIES RUN_SERIAL TRUE)
  endif()
endforeach()
