# Writes OUT, the version script of libteshim.so, from the hook list that the
# C preprocessor expanded into PRE ("TESHIM_NODE \"VERSION\"" lines): one
# empty node per symbol version (the .symver directives in the hook files
# bind each export to its node) and everything else local.
file(STRINGS ${PRE} lines REGEX "^TESHIM_NODE")
set(nodes "")
foreach(l ${lines})
  string(REGEX REPLACE "^TESHIM_NODE \"([^\"]+)\".*" "\\1" v "${l}")
  list(APPEND nodes ${v})
endforeach()
list(REMOVE_DUPLICATES nodes)
set(body "/* generated from shim/shim_hooks.def: do not edit */\n")
foreach(v ${nodes})
  string(APPEND body "${v} { };\n")
endforeach()
string(APPEND body "TESHIM_PRIVATE { local: *; };\n")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
