#!/usr/bin/env python3
"""Instructions per frame of one function, per basic block, from callgrind's per-instruction
counts: what `callgrind_annotate` cannot show (it attributes inlined code to its source lines,
which for a hot scanner spreads one loop over dozens of library files).

    valgrind --tool=callgrind --dump-instr=yes --callgrind-out-file=OUT BINARY ARGS...
    bench/instr_profile.py OUT BINARY 'framehub::json::scan_envelope' FRAMES [BLOCKS]

FRAMES is what the run processed (e.g. `json_count 2000` scans 10,000 frames), BLOCKS how many of
the costliest runs of equally-counted instructions to print (30). Prints the function's total per
frame, then those blocks (count per frame, executions per frame, length, first instruction);
every instruction with its count goes to /tmp/prof.rows. Used for the AVX2 scanners in
BENCHMARKS.md ("The structural-index scanner, built and measured").
"""
import re,collections,sys,subprocess
out,binary,fn=sys.argv[1],sys.argv[2],sys.argv[3]
frames=float(sys.argv[4])
cnt=collections.Counter()
addr=0; incall=False
def pos(tok, cur):
    if tok=='*': return cur
    if tok[0] in '+-':
        v=int(tok[1:],16) if tok[1:].startswith('0x') else int(tok[1:])
        return cur+v if tok[0]=='+' else cur-v
    return int(tok,16) if tok.startswith('0x') else int(tok)
for line in open(out):
    line=line.rstrip('\n')
    if not line: continue
    if '=' in line.split()[0]:
        if line.startswith('calls='): incall=True
        continue
    parts=line.split()
    try: a=pos(parts[0],addr)
    except Exception: continue
    addr=a
    if incall: incall=False; continue
    if len(parts)>=3: cnt[a]+=int(parts[2])
asm=subprocess.run(['objdump','-d','--no-show-raw-insn','-C',binary],capture_output=True,text=True).stdout
rows=[];f=False
for l in asm.split('\n'):
    if re.match(r'^[0-9a-f]+ <'+re.escape(fn)+r'>:$',l): f=True; continue
    if f and l.strip()=='' : 
        if rows: break
        continue
    if f:
        m=re.match(r'\s+([0-9a-f]+):\s+(.*)',l)
        if m: rows.append((cnt.get(int(m.group(1),16),0)/frames,int(m.group(1),16),m.group(2)))
print("total",sum(r[0] for r in rows))
blocks=[];cur=None
for c,a,t in rows:
    if cur and abs(cur[0]-c)<0.01: cur[2]+=1; cur[3]+=c
    else:
        if cur: blocks.append(cur)
        cur=[c,a,1,c,t]
if cur: blocks.append(cur)
for b in sorted(blocks,key=lambda b:-b[3])[:int(sys.argv[5]) if len(sys.argv)>5 else 30]:
    print(f"{b[3]:8.1f}  x{b[0]:.1f}  {b[2]:3d} instrs at {b[1]:x}  first: {b[4][:70]}")
open('/tmp/prof.rows','w').write('\n'.join(f"{c:8.2f} {a:x} {t}" for c,a,t in rows))
