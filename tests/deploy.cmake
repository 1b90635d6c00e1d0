# Deployment checks (tests/deploy): manifests, alert rules, Dockerfile, systemd unit, every
# shipped config through `mtlsd check`, and a live run (sd_notify, health, metrics).
set(_deploy ${CMAKE_CURRENT_LIST_DIR}/deploy)
foreach(check IN ITEMS manifests alerts)
  add_test(NAME deploy.${check} COMMAND ${_deploy}/check_${check}.sh)
endforeach()
foreach(check IN ITEMS systemd configs live kit)
  add_test(NAME deploy.${check} COMMAND ${_deploy}/check_${check}.sh $<TARGET_FILE:mtlsd>)
endforeach()
# The Dockerfile check compares the runtime stage's packages with the libraries the binary loads;
# a sanitizer build loads libasan/libubsan, which the image rightly does not ship, so there it
# checks the Dockerfile alone.
if(MTLSD_SANITIZE)
  add_test(NAME deploy.dockerfile COMMAND ${_deploy}/check_dockerfile.sh)
else()
  add_test(NAME deploy.dockerfile COMMAND ${_deploy}/check_dockerfile.sh $<TARGET_FILE:mtlsd>)
endif()
set_tests_properties(deploy.manifests deploy.alerts deploy.dockerfile deploy.systemd deploy.configs deploy.live deploy.kit
  PROPERTIES LABELS deploy TIMEOUT 300 WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
