#!/bin/sh
# The emulated runtime exports exactly the CUDA functions the real runtime
# exports, under the same version (the stubs fill what is not emulated); libteshim.so exports its CUDA hooks under the real
# versions. Skipped (77) where the real runtime is not installed.
# usage: cemu_check_symbols.sh EMULATED_LIB REAL_LIB TESHIM_LIB
emu=$1 real=$2 shim=$3
if [ ! -e "$real" ]; then
  echo "SKIP: $real not installed: cannot compare symbol versions"
  exit 77
fi
syms() { readelf --dyn-syms -W "$1" | awk '$7 != "UND" && $4 == "FUNC" && $8 ~ /^(__)?cuda/ {print $8}' | sort -u; }
fail=0
syms "$real" > real.txt
syms "$emu" > emu.txt
n=$(wc -l < emu.txt)
echo "emulated runtime exports $n cuda symbols"
for s in $(cat emu.txt); do
  grep -qxF "$s" real.txt || { echo "not in the real runtime: $s"; fail=1; }
done
m=$(comm -23 real.txt emu.txt | wc -l)
[ "$m" = 0 ] || { echo "$m symbols of the real runtime missing, e.g. $(comm -23 real.txt emu.txt | head -3)"; fail=1; }
readelf -d "$emu" | grep -q 'SONAME.*libcudart.so.13' || { echo "wrong soname"; fail=1; }
for h in cudaMemcpy cudaMemcpy_ptds cudaMemcpyAsync cudaMemcpyAsync_ptsz; do
  grep -qxF "$h@@libcudart.so.13" real.txt || { echo "real runtime lacks $h@@libcudart.so.13"; fail=1; }
  readelf --dyn-syms -W "$shim" | grep -q " $h@@libcudart.so.13\$" || { echo "libteshim.so lacks $h@@libcudart.so.13"; fail=1; }
  readelf --dyn-syms -W "$shim" | grep -q " $h@libcudart.so.12\$" || { echo "libteshim.so lacks $h@libcudart.so.12"; fail=1; }
done
readelf -d "$shim" | grep -q 'NEEDED.*libcudart' && { echo "libteshim.so depends on libcudart"; fail=1; }
[ $fail = 0 ] && echo "symbols OK"
exit $fail
