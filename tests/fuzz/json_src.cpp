// SPDX-License-Identifier: Apache-2.0
// Boost.JSON built into the fuzz targets (no separately compiled library there).
#include <boost/json/src.hpp>
