// The compiled harness: runs a batch of stream beats and AXI4-Lite operations through a Verilated design, cycle by
// cycle, in C++ (sim/harness.py builds it and drives it through ctypes; sim/README.md describes the contract).
//
// harness_ports.h is generated per design by sim/harness.py. It defines TOP (the Verilated class), N_IN / N_OUT
// (stream ports), HAS_AXIL, HAS_TRACE, and the port accessors used below:
//   in_set_beat(i, top, words) / in_set_valid(i, top, v) / in_ready(i, top)
//   out_get_beat(o, top, words) / out_valid(o, top) / out_set_ready(o, top, v)
//   axil_* setters and getters (when HAS_AXIL)
//
// One cycle, as every testbench of this project sees it:
//   1. drive inputs (clk low): sources present a beat when their pattern allows, sinks set ready from theirs, the
//      AXI4-Lite master drives its current phase;
//   2. eval: combinational outputs settle; handshakes are sampled (valid && ready);
//   3. rising edge: clk high, eval; the cycle counter advances. clk goes low again without an eval: the next cycle's
//      eval settles it (the designs have no falling-edge logic). Verilator runs its input-combinational ("ico")
//      region on every eval; at the rising edge only clk has changed since step 2 and no design uses clk as data, so
//      that region would recompute what step 2 left. sim/harness.py patches the generated trigger to read
//      harness_skip_ico, which is set for this eval only (harness_ico_skip in the build directory says whether the
//      patch applied; without it the eval is the plain one, slower and the same).
// A source holds a presented beat until it is taken (valid is never withdrawn), as AXI-Stream and amaranth streams
// require; the pattern only decides when a new beat may be offered.

#include <cstdint>
#include <cstring>
#include "verilated.h"
#include "harness_ports.h"
#if HAS_TRACE
#include "verilated_fst_c.h"
#endif

extern "C" {

struct InStream {            // a stream into the design
    const uint32_t* beats;   // n * words
    uint64_t n;
    const uint8_t* pattern;  // valid pattern: pattern[cycle % pattern_len] != 0 allows a new beat
    uint64_t pattern_len;
    uint64_t* accept_cycle;  // out: the cycle each beat was taken (n entries)
    uint64_t taken;          // out
};

struct OutStream {           // a stream out of the design
    uint32_t* beats;         // capacity * words
    uint64_t capacity;
    const uint8_t* pattern;  // ready pattern
    uint64_t pattern_len;
    uint64_t* cycle;         // out: the cycle each beat was taken (capacity entries)
    int64_t last_word;       // word index of the beat's packet-end bit, or -1: count beats
    uint32_t last_mask;
    uint64_t expect;         // packets (or beats) that drain the batch
    uint64_t got_beats;      // out
    uint64_t got_packets;    // out
};

struct AxilOp {
    uint32_t write;          // 0 read, 1 write
    uint32_t addr;
    uint32_t data;           // write data in, read data out
    uint32_t resp;           // out
    uint64_t cycle;          // out: the cycle of the R or B handshake
};

struct Run {
    InStream* ins;
    OutStream* outs;
    AxilOp* ops;
    uint64_t n_ops;
    uint64_t min_cycles;     // keep clocking until at least this many cycles have run, even when drained
    uint64_t stall_cycles;   // no handshake anywhere for this long, before drained: stop with STALL
    uint64_t max_cycles;     // hard bound on the batch
    uint64_t pattern_offset; // cycle c of the batch uses pattern[(pattern_offset + c) % pattern_len]
    uint64_t start_cycle;    // out: the design cycle the batch began on
    uint64_t cycles;         // out
    uint64_t ops_done;       // out
    int32_t status;          // out: 0 drained, 1 stall, 2 an output overflowed its buffer, 3 max_cycles reached
    int32_t port;            // out: the port that stalled or overflowed (-1 AXI4-Lite; in i; out N_IN + o)
    int32_t axil_phase;      // out: on a stall in AXI4-Lite, the phase (1 AR, 2 R, 3 AW/W, 4 B)
    int32_t pad;
};

struct Harness {
    VerilatedContext* ctx;
    TOP* top;
    uint64_t cycle;
#if HAS_TRACE
    VerilatedFstC* trace;
#endif
};

static inline void dump(Harness* h) {
#if HAS_TRACE
    if (h->trace) h->trace->dump(h->ctx->time());
#endif
    h->ctx->timeInc(1);
}

static inline void eval(Harness* h) { h->top->eval(); dump(h); }

// Read by the patched ico trigger of the Verilated model (see step 3 above); external linkage for that extern.
bool harness_skip_ico = false;

static inline void edge_eval(Harness* h) {
    harness_skip_ico = true;
    eval(h);
    harness_skip_ico = false;
}

void* h_new(const char* trace_path) {
    Harness* h = new Harness();
    h->ctx = new VerilatedContext();
    h->ctx->debug(0);
    h->top = new TOP{h->ctx};
    h->cycle = 0;
#if HAS_TRACE
    h->trace = nullptr;
    if (trace_path && trace_path[0]) {
        h->ctx->traceEverOn(true);
        h->trace = new VerilatedFstC();
        h->top->trace(h->trace, 99);
        h->trace->open(trace_path);
    }
#else
    (void)trace_path;
#endif
    return h;
}

void h_free(void* p) {
    Harness* h = (Harness*)p;
#if HAS_TRACE
    if (h->trace) { h->trace->close(); delete h->trace; }
#endif
    h->top->final();
    delete h->top;
    delete h->ctx;
    delete h;
}

uint64_t h_cycle(void* p) { return ((Harness*)p)->cycle; }

static inline void tick(Harness* h) {
    h->top->clk = 1;
    eval(h);
    h->top->clk = 0;
    eval(h);
    h->cycle++;
}

static void idle_inputs(TOP* top) {
    for (int i = 0; i < N_IN; i++) in_set_valid(i, top, 0);
    for (int o = 0; o < N_OUT; o++) out_set_ready(o, top, 0);
#if HAS_AXIL
    axil_set_arvalid(top, 0); axil_set_rready(top, 0);
    axil_set_awvalid(top, 0); axil_set_wvalid(top, 0); axil_set_bready(top, 0);
#endif
}

// rst high for `cycles` rising edges, every input idle.
void h_reset(void* p, int cycles) {
    Harness* h = (Harness*)p;
    idle_inputs(h->top);
    h->top->clk = 0;
    h->top->rst = 1;
    eval(h);
    for (int k = 0; k < cycles; k++) tick(h);
    h->top->rst = 0;
    eval(h);
}

int h_n_in() { return N_IN; }
int h_n_out() { return N_OUT; }

enum { AX_IDLE = 0, AX_AR = 1, AX_R = 2, AX_AWW = 3, AX_B = 4 };

int h_run(void* p, Run* r) {
    Harness* h = (Harness*)p;
    TOP* top = h->top;
    uint8_t presenting[N_IN > 0 ? N_IN : 1] = {0};
    uint64_t next[N_IN > 0 ? N_IN : 1] = {0};
    uint32_t words[OUT_WORDS_MAX > 0 ? OUT_WORDS_MAX : 1];
    int ax = AX_IDLE;
    int aw_pending = 0, w_pending = 0;
    uint64_t op = 0;
    uint64_t c = 0, idle = 0;
    r->start_cycle = h->cycle;
    r->status = 0;
    r->port = 0;
    r->axil_phase = 0;
    for (int i = 0; i < N_IN; i++) r->ins[i].taken = 0;
    for (int o = 0; o < N_OUT; o++) { r->outs[o].got_beats = 0; r->outs[o].got_packets = 0; }
    top->clk = 0;

    for (;;) {
        // -- drained? -------------------------------------------------------------------------------------------
        bool drained = op >= r->n_ops;
        for (int i = 0; drained && i < N_IN; i++) drained = next[i] >= r->ins[i].n;
        for (int o = 0; drained && o < N_OUT; o++) {
            OutStream& s = r->outs[o];
            drained = (s.last_word >= 0 ? s.got_packets : s.got_beats) >= s.expect;
        }
        if (drained && c >= r->min_cycles) break;
        if (!drained && idle >= r->stall_cycles) {
            r->status = 1;
            // Name the first port that is waiting: an input holding a beat, then the bus, then a short output.
            r->port = -2;
            for (int i = 0; i < N_IN && r->port == -2; i++) if (next[i] < r->ins[i].n) r->port = i;
            if (r->port == -2 && op < r->n_ops) { r->port = -1; r->axil_phase = ax; }
            for (int o = 0; o < N_OUT && r->port == -2; o++) {
                OutStream& s = r->outs[o];
                if ((s.last_word >= 0 ? s.got_packets : s.got_beats) < s.expect) r->port = N_IN + o;
            }
            break;
        }
        if (c >= r->max_cycles) { r->status = 3; break; }

        // -- 1. drive -------------------------------------------------------------------------------------------
        for (int i = 0; i < N_IN; i++) {
            InStream& s = r->ins[i];
            if (!presenting[i] && next[i] < s.n && s.pattern[(r->pattern_offset + c) % s.pattern_len]) {
                in_set_beat(i, top, s.beats + next[i] * IN_WORDS[i]);
                presenting[i] = 1;
            }
            in_set_valid(i, top, presenting[i]);
        }
        for (int o = 0; o < N_OUT; o++) {
            OutStream& s = r->outs[o];
            out_set_ready(o, top, s.pattern[(r->pattern_offset + c) % s.pattern_len] != 0);
        }
#if HAS_AXIL
        if (ax == AX_IDLE && op < r->n_ops) {
            AxilOp& a = r->ops[op];
            if (a.write) {
                axil_set_awaddr(top, a.addr); axil_set_wdata(top, a.data); axil_set_wstrb(top, 0xF);
                aw_pending = w_pending = 1;
                ax = AX_AWW;
            } else {
                axil_set_araddr(top, a.addr);
                ax = AX_AR;
            }
        }
        axil_set_arvalid(top, ax == AX_AR);
        axil_set_rready(top, ax == AX_AR || ax == AX_R);
        axil_set_awvalid(top, ax == AX_AWW && aw_pending);
        axil_set_wvalid(top, ax == AX_AWW && w_pending);
        axil_set_bready(top, ax == AX_AWW || ax == AX_B);
#endif
        // -- 2. settle and sample -------------------------------------------------------------------------------
        eval(h);
        bool progress = false;
        for (int i = 0; i < N_IN; i++) {
            if (presenting[i] && in_ready(i, top)) {
                InStream& s = r->ins[i];
                s.accept_cycle[next[i]] = h->cycle;
                next[i]++;
                s.taken = next[i];
                presenting[i] = 0;
                progress = true;
            }
        }
        for (int o = 0; o < N_OUT; o++) {
            OutStream& s = r->outs[o];
            if (s.pattern[(r->pattern_offset + c) % s.pattern_len] && out_valid(o, top)) {
                if (s.got_beats >= s.capacity) { r->status = 2; r->port = N_IN + o; goto done; }
                out_get_beat(o, top, words);
                memcpy(s.beats + s.got_beats * OUT_WORDS[o], words, OUT_WORDS[o] * 4);
                s.cycle[s.got_beats] = h->cycle;
                s.got_beats++;
                if (s.last_word >= 0 && (words[s.last_word] & s.last_mask)) s.got_packets++;
                progress = true;
            }
        }
#if HAS_AXIL
        switch (ax) {
        case AX_AR:
            if (axil_arready(top)) { ax = AX_R; progress = true; }
            break;
        case AX_R:
            if (axil_rvalid(top)) {
                r->ops[op].data = axil_rdata(top); r->ops[op].resp = axil_rresp(top); r->ops[op].cycle = h->cycle;
                op++; ax = AX_IDLE; progress = true;
            }
            break;
        case AX_AWW: {
            int aw_acc = aw_pending && axil_awready(top), w_acc = w_pending && axil_wready(top);
            if (aw_acc || w_acc) progress = true;
            aw_pending &= !aw_acc; w_pending &= !w_acc;
            if (!aw_pending && !w_pending) ax = AX_B;
            break;
        }
        case AX_B:
            if (axil_bvalid(top)) {
                r->ops[op].resp = axil_bresp(top); r->ops[op].cycle = h->cycle;
                op++; ax = AX_IDLE; progress = true;
            }
            break;
        }
#endif
        // -- 3. rising edge -------------------------------------------------------------------------------------
        top->clk = 1;
        edge_eval(h);
        top->clk = 0;
        h->cycle++;
        c++;
        idle = progress ? 0 : idle + 1;
    }
done:
    idle_inputs(top);
    eval(h);
    r->cycles = c;
    r->ops_done = op;
    return r->status;
}

}  // extern "C"
