# Integration tests: pytest files that drive the real mtlsd binary with real clients. One ctest
# entry per file, so a failure names the area; pytest prints the failing test itself.
if(MTLSD_SANITIZE)
  set(_mtlsd_sanitized 1)
else()
  set(_mtlsd_sanitized 0)
endif()
file(GLOB MTLSD_INTEGRATION_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_LIST_DIR}/integration/test_*.py)
foreach(test_file IN LISTS MTLSD_INTEGRATION_TESTS)
  get_filename_component(test_name ${test_file} NAME_WE)
  add_test(NAME integration.${test_name}
           COMMAND /usr/bin/python3 -m pytest -q -p no:cacheprovider --tb=short ${test_file}
           WORKING_DIRECTORY ${CMAKE_CURRENT_LIST_DIR}/integration)
  set_tests_properties(integration.${test_name} PROPERTIES
    LABELS integration
    TIMEOUT 600
    ENVIRONMENT "MTLSD_BIN=$<TARGET_FILE:mtlsd>;MTLSD_SOURCE_DIR=${PROJECT_SOURCE_DIR};PYTHONDONTWRITEBYTECODE=1;MTLSD_SANITIZED=${_mtlsd_sanitized}")
endforeach()
