/* mapfile.h — a whole regular file mapped read-only (the safetensors and GGUF readers' one way in),
 * every failure a message naming the file. */
#ifndef QE_WEIGHTS_MAPFILE_H
#define QE_WEIGHTS_MAPFILE_H
#include <stddef.h>

/* *map (NULL for an empty file) and *size; 0, or -1 with err. Unmap with map_release. */
int map_readonly(const char *path, void **map, size_t *size, char *err, size_t errlen);
void map_release(void *map, size_t size);

#endif
