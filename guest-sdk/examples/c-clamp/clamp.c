/*
 * c-clamp: a wasmgate processor in plain C (no libc, no SDK), to show that
 * the processor ABI (wit/ABI.md, version 1) is language-neutral.
 *
 * Config (read with the `config_get` import during wasmgate_init):
 *
 *     min = -40.0   # number: CBOR int, float16/32/64 accepted; required
 *     max = 85      # number; required; min <= max
 *
 * Behaviour: every input reading is passed on, in order, with every field
 * value clamped into [min, max] (v < min gives min, v > max gives max);
 * sensor, ts, kind, tags, field names and order are unchanged. An empty
 * batch gives no outputs (result 0).
 *
 * Errors (error envelopes, code "bad-config"): `min` or `max` missing, not a
 * number or NaN, or min > max; process called before a successful init.
 * Code "bad-input": a batch that is not the CBOR the host writes (ABI.md §5:
 * definite lengths, every field value a float64).
 *
 * How it works: the output envelope {"outputs": [...]} is the input batch
 * behind a 9-byte prefix (a 1-entry map header and the text "outputs"), so
 * process copies the batch into the output buffer after that prefix and
 * patches the float64 field values in place, walking the CBOR with a small
 * item skipper. Memory comes from a first-fit free-list allocator over
 * `memory.grow`; the output buffer is reused across calls, as the ABI
 * allows (it stays valid until the next call).
 *
 * Build (scripts/build-guests.sh does this):
 *     clang-19 --target=wasm32-unknown-unknown -O2 -nostdlib -mcpu=mvp \
 *         -mmutable-globals -msign-ext -mnontrapping-fptoint -mbulk-memory \
 *         -Wl,--no-entry -Wl,--strip-all -o c-clamp.wasm clamp.c
 */

typedef unsigned char u8;
typedef unsigned int u32;
typedef int i32;
typedef long long i64;
typedef unsigned long long u64;

#define EXPORT(name) __attribute__((export_name(name), visibility("default")))
#define IMPORT(name) __attribute__((import_module("wasmgate"), import_name(name)))

/* The one host import this module uses. */
IMPORT("config_get")
i32 wasmgate_config_get(const u8 *key, i32 key_len, u8 *buf, i32 buf_cap);

/* ------------------------------------------------------------------------ */
/* Allocator: 8-byte header {size, next-free} before every 8-aligned block. */

typedef struct Block {
    u32 size;           /* payload bytes, a multiple of 8 */
    struct Block *next; /* next free block, while free */
} Block;

extern u8 __heap_base; /* provided by wasm-ld: first byte after data + stack */

static u8 *heap_top;    /* bump pointer */
static Block *free_list;

#define PAGE 65536u

static void *mem_alloc(u32 len) {
    if (len > 0x7fff0000u)
        return 0;
    u32 need = (len + 7u) & ~7u;
    if (need == 0)
        need = 8;
    for (Block **pp = &free_list; *pp; pp = &(*pp)->next) {
        Block *b = *pp;
        if (b->size >= need) {
            *pp = b->next;
            return (u8 *)b + sizeof(Block);
        }
    }
    if (!heap_top)
        heap_top = (u8 *)(((u32)&__heap_base + 7u) & ~7u);
    u32 start = (u32)heap_top;
    u32 end = start + sizeof(Block) + need;
    if (end < start)
        return 0;
    u32 have = (u32)__builtin_wasm_memory_size(0) * PAGE;
    if (end > have) {
        u32 pages = (end - have + PAGE - 1) / PAGE;
        if (__builtin_wasm_memory_grow(0, pages) == (__SIZE_TYPE__)-1)
            return 0;
    }
    Block *b = (Block *)heap_top;
    b->size = need;
    b->next = 0;
    heap_top = (u8 *)end;
    return (u8 *)b + sizeof(Block);
}

static void mem_free(void *p) {
    if (!p)
        return;
    Block *b = (Block *)((u8 *)p - sizeof(Block));
    b->next = free_list;
    free_list = b;
}

EXPORT("wasmgate_alloc") i32 wasmgate_alloc(i32 len) { return (i32)mem_alloc((u32)len); }

EXPORT("wasmgate_dealloc") void wasmgate_dealloc(i32 ptr, i32 len) {
    (void)len; /* the block header knows its size */
    mem_free((void *)ptr);
}

/* The ABI marker: its name carries the version; the host never calls it. */
EXPORT("wasmgate_abi_v1") void wasmgate_abi_v1(void) {}

/* ------------------------------------------------------------------------ */
/* The output buffer (guest-owned, valid until the next call). */

static u8 *out;
static u32 out_cap, out_len;

static int out_reserve(u32 n) {
    if (n <= out_cap)
        return 1;
    u32 cap = n < 256 ? 256 : n;
    u8 *p = mem_alloc(cap);
    if (!p)
        return 0;
    mem_free(out);
    out = p;
    out_cap = cap;
    return 1;
}

static i64 pack(const u8 *ptr, u32 len) { return (i64)(((u64)(u32)ptr << 32) | len); }

static u32 str_len(const char *s) {
    u32 n = 0;
    while (s[n])
        n++;
    return n;
}

/* Append a CBOR text string (< 65536 bytes) to `out`; capacity is checked. */
static void put_text(const char *s) {
    u32 n = str_len(s);
    if (n < 24) {
        out[out_len++] = 0x60 | (u8)n;
    } else if (n < 256) {
        out[out_len++] = 0x78;
        out[out_len++] = (u8)n;
    } else {
        out[out_len++] = 0x79;
        out[out_len++] = (u8)(n >> 8);
        out[out_len++] = (u8)n;
    }
    __builtin_memcpy(out + out_len, s, n);
    out_len += n;
}

/* {"error": {"code": code, "message": message}} */
static i64 error_envelope(const char *code, const char *message) {
    if (!out_reserve(32 + str_len(code) + str_len(message)))
        __builtin_trap();
    out_len = 0;
    out[out_len++] = 0xa1;
    put_text("error");
    out[out_len++] = 0xa2;
    put_text("code");
    put_text(code);
    put_text("message");
    put_text(message);
    return pack(out, out_len);
}

/* ------------------------------------------------------------------------ */
/* CBOR helpers. */

static u64 be(const u8 *p, u32 n) {
    u64 v = 0;
    for (u32 i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static double f64_from_bits(u64 bits) {
    double d;
    __builtin_memcpy(&d, &bits, 8);
    return d;
}

static u64 f64_to_bits(double d) {
    u64 bits;
    __builtin_memcpy(&bits, &d, 8);
    return bits;
}

static double half_to_double(u32 h) {
    u32 exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    double v;
    if (exp == 0)
        v = mant / 16777216.0; /* mant * 2^-24 */
    else if (exp == 31)
        v = mant ? __builtin_nan("") : __builtin_inf();
    else
        v = (1.0 + mant / 1024.0) * (double)(1u << exp) / 32768.0; /* 2^(exp-15) */
    return (h & 0x8000) ? -v : v;
}

/*
 * Read the head of the item at p (< end): major type and argument. Returns
 * the position after the head, or 0 if malformed, truncated or indefinite.
 */
static const u8 *head(const u8 *p, const u8 *end, u32 *major, u64 *arg) {
    if (p >= end)
        return 0;
    u32 ib = *p++, info = ib & 0x1f;
    *major = ib >> 5;
    if (info < 24) {
        *arg = info;
        return p;
    }
    if (info > 27)
        return 0; /* reserved or indefinite: the host never writes them */
    u32 n = 1u << (info - 24);
    if ((u32)(end - p) < n)
        return 0;
    *arg = be(p, n);
    return p + n;
}

/* Skip one complete item. Returns the position after it, or 0. */
static const u8 *skip(const u8 *p, const u8 *end, u32 depth) {
    u32 major;
    u64 arg;
    if (depth > 64 || !(p = head(p, end, &major, &arg)))
        return 0;
    switch (major) {
    case 2:
    case 3: /* byte / text string */
        return arg <= (u64)(end - p) ? p + arg : 0;
    case 4: /* array */
        for (u64 i = 0; i < arg; i++)
            if (!(p = skip(p, end, depth + 1)))
                return 0;
        return p;
    case 5: /* map */
        for (u64 i = 0; i < 2 * arg; i++)
            if (!(p = skip(p, end, depth + 1)))
                return 0;
        return p;
    case 6: /* tag: skip the tagged item */
        return skip(p, end, depth + 1);
    default: /* ints, simple values, floats: the head is the whole item */
        return p;
    }
}

/* ------------------------------------------------------------------------ */
/* init: read `min` and `max` through config_get. */

static int configured;
static double clamp_min, clamp_max;

/* 0 ok, 1 missing, 2 not a number. */
static int config_number(const char *key, double *value) {
    u8 buf[16];
    i32 n = wasmgate_config_get((const u8 *)key, (i32)str_len(key), buf, sizeof buf);
    if (n < 0)
        return 1;
    if (n > (i32)sizeof buf || n < 1)
        return 2;
    u32 major;
    u64 arg;
    const u8 *p = head(buf, buf + n, &major, &arg);
    if (!p || p != buf + n)
        return 2;
    if (major == 0)
        *value = (double)arg;
    else if (major == 1)
        *value = -1.0 - (double)arg;
    else if (major == 7 && n == 9)
        *value = f64_from_bits(arg);
    else if (major == 7 && n == 5) {
        u32 bits = (u32)arg;
        float f;
        __builtin_memcpy(&f, &bits, 4);
        *value = f;
    } else if (major == 7 && n == 3)
        *value = half_to_double((u32)arg);
    else
        return 2;
    return *value != *value ? 2 : 0; /* NaN */
}

EXPORT("wasmgate_init") i64 wasmgate_init(i32 ptr, i32 len) {
    (void)ptr; /* the whole config map; this module asks per key instead */
    (void)len;
    configured = 0;
    switch (config_number("min", &clamp_min)) {
    case 1:
        return error_envelope("bad-config", "config key `min`: missing (required)");
    case 2:
        return error_envelope("bad-config", "config key `min`: expected a number");
    }
    switch (config_number("max", &clamp_max)) {
    case 1:
        return error_envelope("bad-config", "config key `max`: missing (required)");
    case 2:
        return error_envelope("bad-config", "config key `max`: expected a number");
    }
    if (clamp_min > clamp_max)
        return error_envelope("bad-config", "config key `min`: must not exceed `max`");
    configured = 1;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* process: copy the batch behind the envelope prefix, clamp in place. */

static const u8 PREFIX[9] = {0xa1, 0x67, 'o', 'u', 't', 'p', 'u', 't', 's'};

/* Clamp the float64 values of the fields map at p. Returns the end, or 0. */
static u8 *clamp_fields(u8 *p, const u8 *end) {
    u32 major;
    u64 n;
    if (!(p = (u8 *)head(p, end, &major, &n)) || major != 5)
        return 0;
    for (u64 i = 0; i < n; i++) {
        if (!(p = (u8 *)skip(p, end, 0))) /* the field name */
            return 0;
        if (p + 9 > end || *p != 0xfb)
            return 0; /* the host writes every field value as float64 */
        double v = f64_from_bits(be(p + 1, 8));
        if (v < clamp_min)
            v = clamp_min;
        else if (v > clamp_max)
            v = clamp_max;
        u64 bits = f64_to_bits(v);
        for (u32 b = 0; b < 8; b++)
            p[1 + b] = (u8)(bits >> (56 - 8 * b));
        p += 9;
    }
    return p;
}

EXPORT("wasmgate_process") i64 wasmgate_process(i32 ptr, i32 len) {
    if (!configured)
        return error_envelope("bad-config", "not configured: wasmgate_init did not succeed");
    const u8 *in = (const u8 *)ptr;
    u32 in_len = (u32)len;
    u32 major;
    u64 count;
    if (!head(in, in + in_len, &major, &count) || major != 4)
        return error_envelope("bad-input", "batch is not a definite-length CBOR array");
    if (count == 0)
        return 0;
    if (!out_reserve(sizeof PREFIX + in_len))
        __builtin_trap();
    __builtin_memcpy(out, PREFIX, sizeof PREFIX);
    __builtin_memcpy(out + sizeof PREFIX, in, in_len);
    out_len = sizeof PREFIX + in_len;

    u8 *p = out + sizeof PREFIX, *end = out + out_len;
    u64 readings;
    p = (u8 *)head(p, end, &major, &readings);
    for (u64 r = 0; p && r < readings; r++) {
        u64 entries;
        if (!(p = (u8 *)head(p, end, &major, &entries)) || major != 5)
            break;
        for (u64 e = 0; p && e < entries; e++) {
            u64 klen;
            u8 *key = (u8 *)head(p, end, &major, &klen);
            if (key && major == 3 && klen == 6 && key + 6 <= end && key[0] == 'f' &&
                key[1] == 'i' && key[2] == 'e' && key[3] == 'l' && key[4] == 'd' && key[5] == 's')
                p = clamp_fields(key + 6, end);
            else if ((p = (u8 *)skip(p, end, 0)))
                p = (u8 *)skip(p, end, 0);
        }
    }
    if (!p || p != end)
        return error_envelope("bad-input",
                              "batch is not the CBOR the host writes (definite lengths, "
                              "float64 field values)");
    return pack(out, out_len);
}
