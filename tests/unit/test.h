/*
 * test.h: a minimal unit-test harness. Each test binary runs its cases with
 * RUN(fn); every case prints "PASS name" or "FAIL name" and the binary exits
 * non-zero if any failed. tests/run.sh adds the lines up.
 */
#ifndef SDC_TEST_H
#define SDC_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures_;      /* failed checks in the current case */
static int test_cases_failed_;
static int test_cases_run_;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "  %s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            test_failures_++;                                                         \
        }                                                                             \
    } while (0)

#define CHECK_MSG(cond, ...)                                                          \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                             \
            fputc('\n', stderr);                                                      \
            test_failures_++;                                                         \
        }                                                                             \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                            \
    do {                                                                              \
        long long a_ = (long long)(a), b_ = (long long)(b);                           \
        if (a_ != b_) {                                                               \
            fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__,     \
                    __LINE__, #a, #b, a_, b_);                                        \
            test_failures_++;                                                         \
        }                                                                             \
    } while (0)

#define RUN(fn)                                                                       \
    do {                                                                              \
        test_failures_ = 0;                                                           \
        fn();                                                                         \
        test_cases_run_++;                                                            \
        if (test_failures_) {                                                         \
            test_cases_failed_++;                                                     \
            printf("FAIL %s\n", #fn);                                                 \
        } else {                                                                      \
            printf("PASS %s\n", #fn);                                                 \
        }                                                                             \
        fflush(stdout);                                                               \
    } while (0)

#define TEST_EXIT() return test_cases_failed_ ? 1 : 0

/* Directory holding committed test data (tests/data); SDC_TEST_DATA overrides. */
static inline const char *test_data_dir(void)
{
    const char *d = getenv("SDC_TEST_DATA");
    return d && *d ? d : "tests/data";
}

/* Compares two float arrays with the goldens' rule: max |a - b| <= tol *
 * max(|ref|) (and an absolute floor for all-zero refs). Prints the worst
 * element. Returns 1 when they match. */
static inline int test_close(const char *what, const float *got, const float *ref, long n,
                             double tol)
{
    double maxref = 0, worst = 0;
    long worst_i = -1;
    for (long i = 0; i < n; i++) {
        double r = fabs((double)ref[i]);
        if (r > maxref) maxref = r;
    }
    for (long i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)ref[i]);
        if (!(d <= worst) || isnan(got[i])) {
            if (isnan(got[i]) || d > worst) {
                worst = isnan(got[i]) ? INFINITY : d;
                worst_i = i;
            }
        }
    }
    double limit = tol * (maxref > 0 ? maxref : 1.0);
    if (worst_i >= 0 && !(worst <= limit)) {
        fprintf(stderr,
                "  %s: mismatch: worst element %ld got %.9g want %.9g (|diff| %.3g > %.3g = "
                "%.1e x max|ref| %.4g), n=%ld\n",
                what, worst_i, (double)got[worst_i], (double)ref[worst_i], worst, limit, tol,
                maxref, n);
        return 0;
    }
    return 1;
}

#endif
