# Deployment checks (tests/deploy): manifests, alert rules, Dockerfile, systemd unit, every
# shipped config through `mtlsd check`, and a live run (sd_notify, health, metrics).
set(_deploy ${CMAKE_CURRENT_LIST_DIR}/deploy)
foreach(check IN ITEMS manifests alerts)
  add_test(NAME deploy.${check} COMMAND ${_deploy}/check_${check}.sh)
endforeach()
foreach(check IN ITEMS dockerfile systemd configs live)
  add_test(NAME deploy.${check} COMMAND ${_deploy}/check_${check}.sh $<TARGET_FILE:mtlsd>)
endforeach()
set_tests_properties(deploy.manifests deploy.alerts deploy.dockerfile deploy.systemd deploy.configs deploy.live
  PROPERTIES LABELS deploy TIMEOUT 300 WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
