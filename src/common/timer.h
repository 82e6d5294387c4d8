/* timer.h: monotonic wall-clock time for timings and progress output. */
#ifndef SDC_TIMER_H
#define SDC_TIMER_H

#include <time.h>

static inline double sdc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
