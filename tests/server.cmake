# The HTTP server and the load generator (tools/serve, tools/loadgen): in-process servers on
# ephemeral loopback ports, libcurl as the client; one suite spawns the real `qembed` binary.
set(QE_SRV_TEST_LIBS qe_tools PkgConfig::CURL PkgConfig::CJSON)
qe_add_test(test_server_api SOURCES test_server_api.c srv_harness.c LIBS ${QE_SRV_TEST_LIBS} TIMEOUT 120)
qe_add_test(test_server_errors SOURCES test_server_errors.c srv_harness.c LIBS ${QE_SRV_TEST_LIBS} TIMEOUT 120)
qe_add_test(test_server_tei SOURCES test_server_tei.c srv_harness.c LIBS ${QE_SRV_TEST_LIBS} TIMEOUT 180)
qe_add_test(test_server_load SOURCES test_server_load.c srv_harness.c LIBS ${QE_SRV_TEST_LIBS} TIMEOUT 180)
qe_add_test(test_server_proc SOURCES test_server_proc.c srv_harness.c LIBS ${QE_SRV_TEST_LIBS} TIMEOUT 120)
add_dependencies(test_server_proc qembed_cli)
qe_add_test(test_server_hostile SOURCES test_server_hostile.c srv_harness.c LIBS ${QE_SRV_TEST_LIBS} TIMEOUT 300)
# Reranking routes on a random Qwen3-Reranker: TEI's /rerank and the Cohere / Jina / vLLM shape.
qe_add_test(test_server_rerank SOURCES test_server_rerank.c srv_harness.c LIBS ${QE_SRV_TEST_LIBS} qe_tools TIMEOUT 180)
# Real client SDKs (cohere-ai, pinned) against a reranker server: optional, skipped (77) unless
# `npm install --prefix tests/clients cohere-ai@7.21.0` was run.
add_test(NAME client_sdks COMMAND bash ${CMAKE_SOURCE_DIR}/tests/clients/run_clients.sh
         $<TARGET_FILE:qembed_cli> ${CMAKE_BINARY_DIR}/test-scratch/client-sdks)
set_tests_properties(client_sdks PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 120)
# Data parallel serving on the CPU backend: engines sharing a queue, failover on a device fault.
qe_add_test(test_server_dp SOURCES test_server_dp.c srv_harness.c LIBS ${QE_SRV_TEST_LIBS} TIMEOUT 300)
