// Boost.URL's compiled part, built into mtlsd from the headers of the same Boost 1.81
// (libboost1.81-dev): no extra package at build time and no libboost_url at run time. This
// translation unit only; everything else includes <boost/url/...> headers as usual.
#include <boost/url/src.hpp>
