"""Rewrites backend_cuda.cu into C++ that compiles against emu.h: the CUDA
headers become emu.h, kernel launches k<<<grid, block, smem, stream>>>(args)
become emu_launch(grid, block, smem, lambda), and the dynamic shared memory
declaration becomes a pointer to the emulator's per-block buffer.

    python3 transform.py backend_cuda.cu out.cpp
"""
import re
import sys

LAUNCH = re.compile(r'([A-Za-z_]\w*(?:<\w+>)?)<<<(.*?)>>>\((.*?)\);', re.S)


def split_top_level(text):
    """Splits at the commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ''
    for ch in text:
        depth += ch == '('
        depth -= ch == ')'
        if ch == ',' and depth == 0:
            parts.append(cur.strip())
            cur = ''
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def launch(m):
    name, cfg, args = m.group(1), split_top_level(m.group(2)), m.group(3)
    smem = cfg[2] if len(cfg) > 2 else '0'
    return 'emu_launch(dim3(%s), dim3(%s), %s, [&]() { %s(%s); });' % (
        cfg[0], cfg[1], smem, name, args)


def main():
    src = open(sys.argv[1]).read()
    src = src.replace('#include <cublasLt.h>\n', '')
    src = src.replace('#include <cuda_runtime.h>\n', '#include "emu.h"\n')
    src = src.replace('extern __shared__ float smem[];', 'float *smem = emu_dyn_smem;')
    src, n = LAUNCH.subn(launch, src)
    if n == 0 or '<<<' in src:
        sys.exit('transform.py: kernel launches not recognised in %s' % sys.argv[1])
    open(sys.argv[2], 'w').write(src)


if __name__ == '__main__':
    main()
