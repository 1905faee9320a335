#!/bin/sh
# Symbol-level checks, no program run:
#  - what a host built with the real headers imports: cudaMemcpy and
#    cudaMemcpyAsync, or with CUDA_API_PER_THREAD_DEFAULT_STREAM the _ptds
#    and _ptsz names, all @libcudart.so.HOST_SOVER;
#  - libteshim.so exports its hooks under libcudart.so.13 (default) and .12
#    and has no DT_NEEDED on libcudart;
#  - where the real runtime is installed: the emulation exports exactly its
#    CUDA functions, under the same version (stubs fill what is not emulated).
#  - the same for the 2D family (cudaMemcpy2D, cudaMemcpy2DAsync, _ptds/_ptsz).
# usage: cemu_check_symbols.sh EMULATED_LIB13 REAL_LIB13 TESHIM_LIB HOST HOST_PTDS HOST_SOVER
#        HOST_2D HOST_2D_PTDS
emu=$1 real=$2 shim=$3 host=$4 host_ptds=$5 v=$6 host2d=$7 host2d_ptds=$8
fail=0
imports() { readelf --dyn-syms -W "$1" | awk '$7 == "UND" {print $8}'; }
for s in cudaMemcpy@libcudart.so.$v cudaMemcpyAsync@libcudart.so.$v; do
  imports "$host" | grep -qxF "$s" || { echo "legacy host does not import $s"; fail=1; }
  imports "$host_ptds" | grep -qxF "$s" && { echo "per-thread host imports $s"; fail=1; }
done
for s in cudaMemcpy_ptds@libcudart.so.$v cudaMemcpyAsync_ptsz@libcudart.so.$v; do
  imports "$host_ptds" | grep -qxF "$s" || { echo "per-thread host does not import $s"; fail=1; }
done
for s in cudaMemcpy2D@libcudart.so.$v cudaMemcpy2DAsync@libcudart.so.$v; do
  imports "$host2d" | grep -qxF "$s" || { echo "legacy 2D host does not import $s"; fail=1; }
  imports "$host2d_ptds" | grep -qxF "$s" && { echo "per-thread 2D host imports $s"; fail=1; }
done
for s in cudaMemcpy2D_ptds@libcudart.so.$v cudaMemcpy2DAsync_ptsz@libcudart.so.$v; do
  imports "$host2d_ptds" | grep -qxF "$s" || { echo "per-thread 2D host does not import $s"; fail=1; }
done
hooks="cudaMemcpy cudaMemcpy_ptds cudaMemcpyAsync cudaMemcpyAsync_ptsz cudaMemcpy2D cudaMemcpy2D_ptds cudaMemcpy2DAsync cudaMemcpy2DAsync_ptsz"
exports() { readelf --dyn-syms -W "$1" | awk '$7 != "UND" {print $8}'; }
for h in $hooks; do
  exports "$shim" | grep -qxF "$h@@libcudart.so.13" || { echo "libteshim.so lacks $h@@libcudart.so.13"; fail=1; }
  exports "$shim" | grep -qxF "$h@libcudart.so.12" || { echo "libteshim.so lacks $h@libcudart.so.12"; fail=1; }
done
readelf -d "$shim" | grep -q 'NEEDED.*libcudart' && { echo "libteshim.so depends on libcudart"; fail=1; }
readelf -d "$emu" | grep -q 'SONAME.*\[libcudart.so.13\]' || { echo "emulation: wrong soname"; fail=1; }
if [ ! -e "$real" ]; then
  echo "note: $real not installed: export table not compared"
  exit $fail
fi
syms() { readelf --dyn-syms -W "$1" | awk '$7 != "UND" && $4 == "FUNC" && $8 ~ /^(__)?cuda/ {print $8}' | sort -u; }
syms "$real" > real.txt
syms "$emu" > emu.txt
echo "emulated runtime exports $(wc -l < emu.txt) CUDA functions, the real one $(wc -l < real.txt)"
extra=$(comm -13 real.txt emu.txt)
[ -z "$extra" ] || { echo "not in the real runtime: $extra"; fail=1; }
missing=$(comm -23 real.txt emu.txt)
[ -z "$missing" ] || { echo "missing from the emulation: $missing"; fail=1; }
for h in $hooks; do
  grep -qxF "$h@@libcudart.so.13" real.txt || { echo "real runtime lacks $h@@libcudart.so.13"; fail=1; }
done
[ $fail = 0 ] && echo "symbols OK"
exit $fail
