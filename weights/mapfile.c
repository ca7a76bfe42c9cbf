/* mapfile.c — see mapfile.h. */
#include "mapfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int map_readonly(const char *path, void **map, size_t *size, char *err, size_t errlen) {
    *map = NULL, *size = 0;
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "%s is not a regular file", path);
        return -1;
    }
    const size_t n = (size_t)st.st_size;
    void *m = NULL;
    if (n && (m = mmap(NULL, n, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED) {
        close(fd);
        snprintf(err, errlen, "cannot mmap %s: %s", path, strerror(errno));
        return -1;
    }
    close(fd);
    *map = m, *size = n;
    return 0;
}

void map_release(void *map, size_t size) {
    if (map) munmap(map, size);
}
