# SPDX-License-Identifier: Apache-2.0
# TOLLGATE_SANITIZE="address;undefined" or "thread": applied to every target of the project.
if(TOLLGATE_SANITIZE)
  string(REPLACE ";" "," _tg_san "${TOLLGATE_SANITIZE}")
  add_compile_options(-fsanitize=${_tg_san} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=${_tg_san})
endif()
