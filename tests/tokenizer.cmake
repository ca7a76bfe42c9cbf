# Tokenizer suites: exact match against the shared reference tokenizations and the corpus,
# plus the API's edge cases (truncation, UTF-8 errors, long inputs, threads, prompts); and the
# `qembed tokenize` sub-command run as a program.
qe_add_test(test_tokenizer
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tokenizer_fixtures.c
          ${CMAKE_CURRENT_SOURCE_DIR}/test_tokenizer_api.c
          ${CMAKE_CURRENT_SOURCE_DIR}/tok_sha256.c
          ${CMAKE_SOURCE_DIR}/tools/json_strict.c
  LIBS qe_tokenizer PkgConfig::CJSON)
qe_add_test(test_tokenizer_cli
  SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tokenizer_cli.c
  LIBS qe_tokenizer)
add_dependencies(test_tokenizer_cli qembed_cli)
