/* One decoding step of ModernGPT (RMSNorm, SwiGLU, RoPE, KV cache) in plain C, with fp32 or int8 weights.
 *
 * Why C: at batch 1 a decoding step multiplies one vector by each of 30 small matrices and runs a few dozen
 * tiny element-wise ops. PyTorch (even compiled) pays a fixed cost per op, which at this size costs more than
 * the arithmetic. Here the whole step is one function call: each matrix-vector product streams its weights once
 * (16 per instruction with AVX-512, 8 with AVX2, plain loops elsewhere), rows split across the cores with
 * OpenMP, and nothing is allocated.
 * src/cdecode.py builds this file with the system C compiler and checks it against the PyTorch model
 * (tests/test_cdecode.py). It computes what `GPT.forward` computes for one token through its cache: with fp32
 * weights the fp32 model itself; with int8 weights (quantize.py) the fp32 model holding those weights, since the
 * activations stay fp32. The idea (a whole transformer step in one small C file) is llama2.c's run.c.
 */
#include <math.h>
#include <stdint.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

typedef struct {          /* one block: weights (out, in), row-major as nn.Linear stores them, and its cache */
    const float *norm1, *norm2;
    const void *qkv, *proj, *gate, *up, *down;        /* float, or int8 with one fp32 scale per output row */
    const float *qkv_scale, *proj_scale, *gate_scale, *up_scale, *down_scale;  /* int8 only */
    float *keys, *values;                             /* (n_head, capacity, head_dim) */
} Layer;

typedef struct {
    int n_layer, n_head, head_dim, dim, hidden, vocab, capacity, threads, int8_weights;
    float eps;
    const float *embedding;  /* (vocab, dim): the token embedding, also the output layer (tied) */
    const float *norm_f;
    const double *inv_freq;  /* (head_dim / 2) RoPE frequencies, angles computed in double as in modernize.py */
    Layer *layers;
    float *x, *h, *qkv, *att, *hidden_act, *scores, *cos, *sin;  /* scratch: dim, dim, 3 dim, dim, hidden,
                                                                     n_head capacity, head_dim / 2, head_dim / 2 */
} Model;

#if defined(__AVX2__)
static float sum8(__m256 v) {
    __m128 half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    half = _mm_hadd_ps(half, half);
    return _mm_cvtss_f32(_mm_hadd_ps(half, half));
}
#endif

/* sum_i a[i] * b[i] in fp32: a weight row against the activations, or a query against a cached key */
static float dot_float(const float *a, const float *b, int n) {
    int i = 0;
    float sum = 0.0f;
#if defined(__AVX512F__)
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {  /* two independent sums hide the latency of the multiply-add */
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
    }
    for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#elif defined(__AVX2__)
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    sum = sum8(_mm256_add_ps(acc0, acc1));
#endif
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

/* sum_i w[i] * x[i] for int8 w: each weight widened to fp32, multiplied with the fp32 activation */
static float dot_int8(const int8_t *w, const float *x, int n) {
    int i = 0;
    float sum = 0.0f;
#if defined(__AVX512F__)
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        __m512 w0 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + i))));
        __m512 w1 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(w + i + 16))));
        acc0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), acc0);
        acc1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), acc1);
    }
    sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#elif defined(__AVX2__)
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
        __m256 w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + i))));
        __m256 w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(w + i + 8))));
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + i), acc0);
        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + i + 8), acc1);
    }
    sum = sum8(_mm256_add_ps(acc0, acc1));
#endif
    for (; i < n; i++) sum += w[i] * x[i];
    return sum;
}

/* row r of W times x: fp32 weights, or int8 weights times their row's scale */
static float row_dot(const Model *m, const void *w, const float *scale, int64_t r, int cols, const float *x) {
    if (m->int8_weights) return dot_int8((const int8_t *)w + r * cols, x, cols) * scale[r];
    return dot_float((const float *)w + r * cols, x, cols);
}

/* y = W x, rows split across threads */
static void matvec(const Model *m, float *y, const void *w, const float *scale, const float *x, int rows, int cols) {
    #pragma omp parallel for schedule(static) num_threads(m->threads)
    for (int r = 0; r < rows; r++) y[r] = row_dot(m, w, scale, r, cols, x);
}

/* SwiGLU's hidden layer: silu(gate x) * (up x), both products and the gate for a row in one pass */
static void swiglu_hidden(const Model *m, float *y, const Layer *l, const float *x) {
    #pragma omp parallel for schedule(static) num_threads(m->threads)
    for (int r = 0; r < m->hidden; r++) {
        float gate = row_dot(m, l->gate, l->gate_scale, r, m->dim, x);
        float up = row_dot(m, l->up, l->up_scale, r, m->dim, x);
        y[r] = gate / (1.0f + expf(-gate)) * up;
    }
}

static void rmsnorm(float *out, const float *x, const float *weight, int n, float eps) {
    float squares = 0.0f;
    for (int i = 0; i < n; i++) squares += x[i] * x[i];
    float inv = 1.0f / sqrtf(squares / n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * inv * weight[i];
}

/* rotate each (even, odd) pair of every head of v by the angles of this position (modernize.apply_rotary) */
static void rope(float *v, int n_head, int head_dim, const float *cos_table, const float *sin_table) {
    for (int h = 0; h < n_head; h++)
        for (int i = 0; i < head_dim / 2; i++) {
            float *pair = v + h * head_dim + 2 * i, even = pair[0], odd = pair[1];
            pair[0] = even * cos_table[i] - odd * sin_table[i];
            pair[1] = even * sin_table[i] + odd * cos_table[i];
        }
}

/* one query per head against the `filled` cached keys; slot order does not matter to softmax */
static void attend(Model *m, Layer *l, int filled) {
    int hd = m->head_dim;
    float scale = 1.0f / sqrtf((float)hd);
    #pragma omp parallel for schedule(static) num_threads(m->threads)
    for (int h = 0; h < m->n_head; h++) {
        const float *q = m->qkv + h * hd;
        const float *keys = l->keys + (int64_t)h * m->capacity * hd, *values = l->values + (int64_t)h * m->capacity * hd;
        float *scores = m->scores + h * m->capacity, *out = m->att + h * hd;
        float max = -INFINITY, total = 0.0f;
        for (int t = 0; t < filled; t++) {
            scores[t] = dot_float(q, keys + t * hd, hd) * scale;
            max = scores[t] > max ? scores[t] : max;
        }
        for (int t = 0; t < filled; t++) total += scores[t] = expf(scores[t] - max);
        for (int j = 0; j < hd; j++) out[j] = 0.0f;
        for (int t = 0; t < filled; t++) {
            float weight = scores[t] / total;
            for (int j = 0; j < hd; j++) out[j] += weight * values[t * hd + j];
        }
    }
}

/* token at absolute `position` -> logits (vocab); writes its keys and values to slot position % capacity */
void decode_step(Model *m, int token, int64_t position, float *logits) {
    int dim = m->dim, hd = m->head_dim, slot = (int)(position % m->capacity);
    int filled = position + 1 < m->capacity ? (int)position + 1 : m->capacity;
    for (int i = 0; i < hd / 2; i++) {  /* this position's RoPE angles, shared by every layer */
        double angle = (double)position * m->inv_freq[i];
        m->cos[i] = (float)cos(angle);
        m->sin[i] = (float)sin(angle);
    }
    for (int i = 0; i < dim; i++) m->x[i] = m->embedding[(int64_t)token * dim + i];
    for (int layer = 0; layer < m->n_layer; layer++) {
        Layer *l = &m->layers[layer];
        rmsnorm(m->h, m->x, l->norm1, dim, m->eps);
        matvec(m, m->qkv, l->qkv, l->qkv_scale, m->h, 3 * dim, dim);  /* rows: q, k, v */
        rope(m->qkv, m->n_head, hd, m->cos, m->sin);
        rope(m->qkv + dim, m->n_head, hd, m->cos, m->sin);
        for (int h = 0; h < m->n_head; h++)
            for (int j = 0; j < hd; j++) {
                int64_t at = ((int64_t)h * m->capacity + slot) * hd + j;
                l->keys[at] = m->qkv[dim + h * hd + j];
                l->values[at] = m->qkv[2 * dim + h * hd + j];
            }
        attend(m, l, filled);
        matvec(m, m->h, l->proj, l->proj_scale, m->att, dim, dim);
        for (int i = 0; i < dim; i++) m->x[i] += m->h[i];
        rmsnorm(m->h, m->x, l->norm2, dim, m->eps);
        swiglu_hidden(m, m->hidden_act, l, m->h);
        matvec(m, m->h, l->down, l->down_scale, m->hidden_act, dim, m->hidden);
        for (int i = 0; i < dim; i++) m->x[i] += m->h[i];
    }
    rmsnorm(m->h, m->x, m->norm_f, dim, m->eps);
    #pragma omp parallel for schedule(static) num_threads(m->threads)
    for (int v = 0; v < m->vocab; v++) logits[v] = dot_float(m->embedding + (int64_t)v * dim, m->h, dim);
}
